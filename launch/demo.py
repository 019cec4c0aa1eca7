"""The main job on the embedded default: JetSpec next to plain decoding, side by side.

Default (``--engine sglang``): prepares SmolLM2-135M-Instruct, starts two real SGLang servers on
127.0.0.1 (one with ``--speculative-algorithm JETSPEC`` and the shipped head, one without
speculation), sends the same small greedy workload to each, prints per-prompt accepted length,
tokens/s of both and whether the outputs are identical, then stops both servers.
``--engine reference`` does the same with the transformers reference decoder instead (no server).
Without a shipped head an untrained one is used (it then shows losslessness, not speed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m launch.demo", description=__doc__)
    p.add_argument("--prompts", default=str(REPO / "data" / "parity_prompts.jsonl"))
    p.add_argument("--num-prompts", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--budget", type=int, default=32,
                   help="sglang: the largest verify width (the server chooses each step's width "
                        "up to it unless SGLANG_JETSPEC_BUDGET=static pins it); reference: the budget")
    p.add_argument("--engine", choices=("sglang", "reference"), default="sglang")
    p.add_argument("--concurrency", type=int, default=1, help="sglang: requests in flight at once")
    args = p.parse_args(argv)
    if args.engine == "sglang":
        return server_demo(args)

    from sglang_jetspec.model_store import default_head_dir, model_path
    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
    from sglang_jetspec.reference.parity import check_parity
    from sglang_jetspec.reference.prompts import encode_prompts, read_prompts
    from sglang_jetspec.reference.runner import AREngine, load_head_arg
    from sglang_jetspec.reference.target import HFTarget

    target = HFTarget(model_path("smollm2"))
    head_dir = default_head_dir(target.model_dir)
    head = load_head_arg(None if head_dir else "random", target)
    print(f"target: {target.model_dir}\nhead:   {head_dir or 'UNTRAINED (random weights): shows losslessness only'}")
    decoder = ReferenceDecoder(target, head, TreeSettings(budget=args.budget))
    ar = AREngine(target)
    prompts = read_prompts(args.prompts)[: args.num_prompts]
    rows, tot = [], {"ar_tok": 0, "ar_s": 0.0, "js_tok": 0, "js_s": 0.0, "rounds": 0, "acc": 0}
    for text, ids in zip(prompts, encode_prompts(target.tokenizer, prompts)):
        a = ar.generate(ids, args.max_new_tokens)
        j = decoder.generate(ids, args.max_new_tokens)
        rep = check_parity(target.model, ids, a.output_ids, j.output_ids)
        match = "yes" if rep.identical else ("near-tie" if rep.near_tie else "NO")
        tau = sum(j.accepted) / max(j.rounds, 1)  # committed per verify forward
        rows.append((text[:40], len(j.output_ids), tau, len(a.output_ids) / a.seconds,
                     len(j.output_ids) / j.seconds, match))
        tot["ar_tok"] += len(a.output_ids); tot["ar_s"] += a.seconds
        tot["js_tok"] += len(j.output_ids); tot["js_s"] += j.seconds; tot["rounds"] += j.rounds; tot["acc"] += sum(j.accepted)
    print(f"\nbudget {args.budget}, greedy, {args.max_new_tokens} new tokens max, fp32 CPU\n")
    print(f"{'prompt':42} {'tokens':>6} {'accept':>7} {'ar tok/s':>9} {'jetspec tok/s':>14} {'match':>8}")
    for r in rows:
        print(f"{r[0]:42} {r[1]:6d} {r[2]:7.2f} {r[3]:9.1f} {r[4]:14.1f} {r[5]:>8}")
    ar_tps, js_tps = tot["ar_tok"] / tot["ar_s"], tot["js_tok"] / tot["js_s"]
    print(f"\nall: accept length {tot['acc'] / max(tot['rounds'], 1):.2f}, ar {ar_tps:.1f} tok/s, "
          f"jetspec {js_tps:.1f} tok/s, speedup {js_tps / ar_tps:.2f}x")
    if any(r[5] == "NO" for r in rows):
        raise SystemExit("greedy outputs differ from plain decoding beyond a near-tie")


def server_demo(args) -> None:
    from concurrent.futures import ThreadPoolExecutor
    import tempfile
    import time

    from transformers import AutoTokenizer

    from sglang_jetspec.integration.budget_policy import mode_from_env
    from sglang_jetspec.integration.server_engine import head_folder
    from sglang_jetspec.integration.server_process import ServerSpec, start_side_by_side
    from sglang_jetspec.model_store import default_head_dir, model_path
    from sglang_jetspec.reference.prompts import encode_prompts, read_prompts

    model = model_path("smollm2")
    shipped = default_head_dir(model)
    head = head_folder(None if shipped else "random", model)
    print(f"target: {model}\nhead:   {head if shipped else 'UNTRAINED (random weights): shows losslessness only'}")
    logs = tempfile.mkdtemp(prefix="jetspec_demo_")
    mode = mode_from_env()
    label = f"budget {args.budget}" if mode == "static" else f"adaptive width <= {args.budget}"
    print(f"starting two SGLang servers on 127.0.0.1 (plain, JETSPEC {label}); logs in {logs}",
          flush=True)
    t0 = time.perf_counter()
    # --sleep-on-idle: an idle SGLang scheduler otherwise spins a whole core, and the server not
    # being measured would slow the one that is
    idle = ["--sleep-on-idle"]
    plain, spec = start_side_by_side([ServerSpec(str(model), extra=idle),
                                      ServerSpec(str(model), str(head), budget=args.budget, extra=idle)], logs)
    try:
        print(f"both ready after {time.perf_counter() - t0:.0f}s", flush=True)
        tok = AutoTokenizer.from_pretrained(model)
        prompts = read_prompts(args.prompts)[: args.num_prompts]
        ids = encode_prompts(tok, prompts)

        def workload(server):
            def one(x):
                t = time.perf_counter()
                r = server.generate(x, args.max_new_tokens, temperature=0.0)
                return r, time.perf_counter() - t
            t = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as ex:
                out = list(ex.map(one, ids))
            return out, time.perf_counter() - t

        warm = encode_prompts(tok, ["Write a short poem about the sea."])[0]
        for server in (plain, spec):  # first requests pay one-off allocations (and the width warm-up)
            server.generate(warm, args.max_new_tokens, temperature=0.0)
        want, plain_s = workload(plain)
        got, spec_s = workload(spec)
    finally:
        plain.stop()
        spec.stop()
    print(f"\nJETSPEC {label}, greedy, {args.max_new_tokens} new tokens max, concurrency {args.concurrency} "
          f"(one warm-up request per server first)\n")
    print(f"{'prompt':42} {'tokens':>6} {'accept':>7} {'plain tok/s':>11} {'jetspec tok/s':>14} {'match':>6}")
    rounds = committed = 0
    for text, (w, ws), (g, gs) in zip(prompts, want, got):
        n, r = len(g["output_ids"]), g["meta_info"].get("spec_verify_ct", 0)
        rounds, committed = rounds + r, committed + max(n - 1, 0)
        match = "yes" if g["output_ids"] == w["output_ids"] else "NO"
        print(f"{text[:40]:42} {n:6d} {(n - 1) / max(r, 1):7.2f} {len(w['output_ids']) / ws:11.1f} "
              f"{n / gs:14.1f} {match:>6}")
    plain_tps = sum(len(w["output_ids"]) for w, _ in want) / plain_s
    spec_tps = sum(len(g["output_ids"]) for g, _ in got) / spec_s
    print(f"\nall: accept length {committed / max(rounds, 1):.2f} (tokens per verify round, bonus included), "
          f"plain {plain_tps:.1f} tok/s, jetspec {spec_tps:.1f} tok/s, speedup {spec_tps / plain_tps:.2f}x")
    if any(g["output_ids"] != w["output_ids"] for (w, _), (g, _) in zip(want, got)):
        raise SystemExit("JETSPEC outputs differ from the plain server's")


if __name__ == "__main__":
    main()
