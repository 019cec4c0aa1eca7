"""Replay an expert trace offline: expert-aware pruning on one device and under simulated
expert-parallel placements, with the exact accepted length (sglang_jetspec/bench/expert_replay.py).

    SGLANG_JETSPEC_EXPERT_AWARE=off SGLANG_JETSPEC_EXPERT_TRACE=trace.jsonl python -m sglang.launch_server ...
    python -m launch.replay_experts --trace trace.jsonl --num-experts 8 --ep 1,2,4,8 [--oracle-routing] \
        [--acceptance recorded,conditional,ngram,oracle [--prior HEAD]] [--hold-loss 0.03 [--hold-by labels|probes] [--hold-per width|all] [--hold-knob fraction|price] [--probe-every 8]] [--json OUT]

Cost the scheduler optimises (simulated deployment, seconds): a + b * tokens + c * distinct
experts summed over layers (one device), or + d * most-loaded-rank experts (EP); defaults model a
verify dominated by expert weight reads.
"""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m launch.replay_experts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", required=True, help="JSONL written with SGLANG_JETSPEC_EXPERT_TRACE")
    p.add_argument("--num-experts", type=int, required=True, help="experts per MoE layer of the target")
    p.add_argument("--ep", default="1,2,4,8", help="placements: 1 = one device, R = R expert-parallel ranks")
    p.add_argument("--a", type=float, default=1e-3, help="fixed seconds per verify")
    p.add_argument("--b", type=float, default=2e-6, help="seconds per verify token")
    p.add_argument("--c", type=float, default=1e-4, help="seconds per (layer, distinct expert); under EP "
                   "per (layer, expert on the most loaded rank) unless --d is given")
    p.add_argument("--d", type=float, default=None)
    p.add_argument("--max-expected-loss", type=float, default=0.03,
                   help="share of the candidates' expected tokens (by the scheduler's node probabilities) "
                        "pruning may give up")
    p.add_argument("--hold-loss", type=float, default=None,
                   help="hold the ACCEPTED-LENGTH loss at this share with observed rounds, as the server does "
                        "(core/loss_bound.py), instead of the fixed --max-expected-loss on the model's "
                        "expected tokens")
    p.add_argument("--hold-by", default="labels", choices=("labels", "probes"),
                   help="with --hold-loss: each pruned round observes its own loss from its labels (the "
                        "server's way for greedy and walk-rule sampling, the default), or probe rounds "
                        "measure it (the server's way for recursive rejection sampling)")
    p.add_argument("--hold-per", default="all", choices=("all", "width"),
                   help="with --hold-loss: one bound for every round (the default, as replays before "
                        "2026-12-07 evening), or one per tree width (the widest candidate tree's node count "
                        "rounded up to a power of two: the server's way since then)")
    p.add_argument("--hold-knob", default="fraction", choices=("fraction", "price"),
                   help="with --hold-loss: the held bound is each round's share of its expected tokens to "
                        "give up (the default, as replays before 2026-12-07 late night), or sets a price in "
                        "expected tokens per predicted second every round prunes at (core/held_price.py: "
                        "the server's way since then, with --hold-per width)")
    p.add_argument("--probe-every", type=int, default=None,
                   help="with --hold-loss: one round in this many unobserved ones verifies the whole trees "
                        "and measures the loss (default: the server's)")
    p.add_argument("--oracle-routing", action="store_true",
                   help="also replay with the recorded routing in place of the predicted experts (the "
                        "bound a perfect expert predictor would reach)")
    p.add_argument("--acceptance", default="recorded",
                   help="comma-separated node probabilities to replay with: recorded (what the server's "
                        "scheduler saw), calibrated (the score calibrator), conditional (the conditional "
                        "model), ngram (the conditional model split on each node's n-gram log-prob, the server's "
                        "with a head that has a prior), oracle (the recorded accepted paths: the bound of a "
                        "perfect prediction)")
    p.add_argument("--prior", default=None, metavar="HEAD",
                   help="head folder whose n-gram prior gives the nodes' n-gram log-probs for --acceptance "
                        "ngram where the trace did not record them (traces before 2026-12-07 evening)")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)

    from sglang_jetspec.bench.expert_replay import ACCEPTANCE, load_trace, markdown, replay, with_ngram

    try:
        eps = [int(x) for x in args.ep.split(",") if x.strip()]
        bad = [e for e in eps if e < 1 or args.num_experts % e]
        if bad or not eps:
            raise ValueError(f"--ep {args.ep}: each placement must divide --num-experts {args.num_experts}")
        kinds = [x.strip() for x in args.acceptance.split(",") if x.strip()]
        if not kinds or any(k not in ACCEPTANCE for k in kinds):
            raise ValueError(f"--acceptance {args.acceptance}: each must be one of {list(ACCEPTANCE)}")
        rounds = load_trace(args.trace)
        if args.prior is not None:
            from sglang_jetspec.core.pair_prior import PairPrior

            prior = PairPrior.load(args.prior)
            if prior is None:
                raise ValueError(f"--prior {args.prior}: no n-gram prior there (pair_prior.safetensors)")
            rounds = with_ngram(rounds, prior)
        if "ngram" in kinds and any(r.ngram is None for r in rounds):
            raise ValueError(f"--acceptance ngram: {args.trace} does not record the nodes' n-gram log-probs; "
                             "pass the head's folder as --prior")
        hold = None
        if args.hold_loss is not None:
            from sglang_jetspec.core.loss_bound import LossBound
            from sglang_jetspec.integration.expert_schedule import PROBE_EVERY

            hold = {"target": args.hold_loss, "probe_every": args.probe_every or PROBE_EVERY}
            LossBound(**hold)  # bad values fail here, before the replay
        elif args.probe_every is not None:
            raise ValueError("--probe-every needs --hold-loss")
        if args.hold_per != "all" and args.hold_loss is None:
            raise ValueError("--hold-per width needs --hold-loss")
        if args.hold_knob != "fraction" and args.hold_loss is None:
            raise ValueError("--hold-knob price needs --hold-loss")
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"launch.replay_experts: {exc}") from None
    cost = {"a": args.a, "b": args.b, "c": args.c, "d": args.d}
    rows = [replay(rounds, args.num_experts, ep, cost, args.max_expected_loss, oracle, kind, hold,
                   labels=args.hold_by == "labels", per_width=args.hold_per == "width", knob=args.hold_knob)
            for kind in kinds for oracle in ([False, True] if args.oracle_routing else [False]) for ep in eps]
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trace": args.trace, "cost": cost, "max_expected_loss": args.max_expected_loss,
                       "hold": hold,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
