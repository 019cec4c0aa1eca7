"""Benchmark speculative methods on real SGLang servers, side by side, in one run.

    python -m launch.bench [--model DIR] [--head DIR] [--bidir-head DIR]
        [--workload code,math,chat,shared-prefix,FILE.jsonl] [--batch-sizes 1,4,16]
        [--budgets 8,16,32,64,auto,auto-maxreserve] [--max-total-tokens N]
        [--methods ar,jetspec,chain,bidirectional,ngram,standalone] [--standalone-draft DIR]
        [--max-new-tokens N] [--num-prompts N] [--serving-rates 0.5,1] --out DIR

Leaves DIR/results.json, DIR/report.md and PNG plots; server logs in DIR/logs/. Defaults: the
embedded SmolLM2 target and its shipped head.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m launch.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="target folder (default: the embedded smollm2)")
    p.add_argument("--head", default=None, help="causal JetSpec head (default: the target's shipped head)")
    p.add_argument("--bidir-head", default=None, help="bidirectional head (needed by method bidirectional)")
    p.add_argument("--workload", default="code,math,chat", help="bundled names and/or JSONL files, comma-separated")
    p.add_argument("--batch-sizes", default="1,4")
    p.add_argument("--budgets", default="8,16,32,64")
    p.add_argument("--methods", default="ar,jetspec,chain")
    p.add_argument("--width", type=int, default=None, help="tree width (default: the head's)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--num-prompts", type=int, default=4, help="prompts per workload (at least the batch size)")
    p.add_argument("--ngram-draft-tokens", type=int, default=8)
    p.add_argument("--standalone-draft", default=None, metavar="DIR",
                   help="draft model of method standalone (SGLang STANDALONE; same vocabulary as the target)")
    p.add_argument("--standalone-steps", type=int, default=4, help="tokens the standalone draft chains per round")
    p.add_argument("--mixed-load", default="", help="concurrency phases of a mixed load, e.g. 1,16,4 "
                   "(each workload's prompts sent in consecutive parts at these concurrencies)")
    p.add_argument("--serving-rates", default="", help="request rates for sglang.bench_serving, e.g. 0.5,1")
    p.add_argument("--serving-prompts", type=int, default=4, help="prompts per workload in the serving sweep")
    p.add_argument("--max-total-tokens", type=int, default=None,
                   help="KV pool size (tokens) of every server; small values put the radix cache and the "
                        "speculative KV reserve under pressure (default: roomy, 1024 per request in flight)")
    p.add_argument("--expert-aware-off", action="store_true",
                   help="MoE targets: also measure every static jetspec budget with expert-aware tree "
                        "scheduling off (its own server; SGLANG_JETSPEC_EXPERT_AWARE=off)")
    p.add_argument("--draft-vocab-off", action="store_true",
                   help="also measure every static jetspec budget drafting over the target's whole vocabulary "
                        "instead of the head folder's draft vocabulary (its own server; "
                        "SGLANG_JETSPEC_DRAFT_VOCAB=off)")
    p.add_argument("--pair-prior-off", action="store_true",
                   help="also measure every static jetspec budget with plain best-first trees, ignoring the head "
                        "folder's n-gram prior pair_prior.safetensors (its own server; SGLANG_JETSPEC_PAIR_PRIOR=off)")
    p.add_argument("--cpu-linear-onednn", action="store_true",
                   help="CPU: also measure ar and every static jetspec budget on servers whose linear layers use "
                        "packed oneDNN products instead of PyTorch's F.linear (SGLANG_JETSPEC_CPU_LINEAR=onednn), "
                        "labelled ar-onednn and jetspec@B-onednn")
    p.add_argument("--expert-trace", default=None, metavar="FILE",
                   help="with --expert-aware-off: that server writes its verified rounds here "
                        "(python -m launch.replay_experts replays them under simulated EP placements)")
    p.add_argument("--auto-max-width", type=int, default=None,
                   help="largest verify width of the adaptive servers (default: the largest static budget; "
                        "needed when --budgets lists only auto variants)")
    p.add_argument("--repeats", type=int, default=1,
                   help="measure every cell this many times, the configurations taking turns, and report "
                        "the totals (a noisy machine's slow minutes then fall on every configuration)")
    p.add_argument("--warmup-passes", type=int, default=0,
                   help="before measuring, run the first cell (first workload, first batch size) this many "
                        "times over every configuration, unmeasured (besides each server's 3 warm-up requests): "
                        "the adaptive width then meets the widths it will use and learns its curve first")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from sglang_jetspec.bench.methods import (parse_batch_sizes, parse_budgets, parse_list, parse_mixed_load,
                                              plan_configs)
    from sglang_jetspec.bench.report import make_plots, write_markdown
    from sglang_jetspec.bench.suite import BenchPlan, run_suite, write_json
    from sglang_jetspec.bench.workloads import load_workload, workload_name
    from sglang_jetspec.core.head_config import HeadConfig
    from sglang_jetspec.integration.server_engine import head_folder
    from sglang_jetspec.model_store import model_path

    try:
        methods = parse_list(args.methods, "methods")
        if args.auto_max_width is not None and args.auto_max_width < 2:
            raise ValueError(f"--auto-max-width {args.auto_max_width} must be >= 2")
        budgets, autos = parse_budgets(args.budgets, args.auto_max_width)
        batch_sizes = parse_batch_sizes(args.batch_sizes)
        mixed = parse_mixed_load(args.mixed_load) if args.mixed_load else []
        rates = [float(r) for r in parse_list(args.serving_rates, "serving-rates")] if args.serving_rates else []
        if args.repeats < 1:
            raise ValueError(f"--repeats {args.repeats} must be >= 1")
        if args.warmup_passes < 0:
            raise ValueError(f"--warmup-passes {args.warmup_passes} must be >= 0")
        if args.max_new_tokens < 1 or args.num_prompts < 1:
            raise ValueError("--max-new-tokens and --num-prompts must be >= 1")
        if args.expert_trace and not args.expert_aware_off:
            raise ValueError("--expert-trace needs --expert-aware-off (the trace holds the full trees)")
        if args.max_total_tokens is not None and args.max_total_tokens < 256:
            raise ValueError(f"--max-total-tokens {args.max_total_tokens} must be >= 256 (KV slots of the pool)")
        model = str(args.model or model_path("smollm2"))
        if "standalone" in methods and not args.standalone_draft:
            raise ValueError("method standalone needs --standalone-draft DIR (a small model with the target's "
                             "vocabulary; e.g. smollm2 for the qwen3moe target: python -m launch.models path smollm2)")
        if args.standalone_steps < 1:
            raise ValueError(f"--standalone-steps {args.standalone_steps} must be >= 1")
        heads = {}
        if any(m in methods for m in ("jetspec", "chain")):
            heads["jetspec"] = str(head_folder(args.head, model))
        if "bidirectional" in methods:
            if not args.bidir_head:
                raise ValueError("method bidirectional needs --bidir-head DIR (a head trained with "
                                 "causal_head false, e.g. by launch.train_head --also-bidirectional)")
            heads["bidirectional"] = args.bidir_head
        if args.pair_prior_off:
            from sglang_jetspec.core.pair_prior import FILE_NAME
            if "jetspec" not in heads or not Path(heads["jetspec"], FILE_NAME).is_file():
                raise ValueError(f"--pair-prior-off pairs every static budget with and without the head folder's "
                                 f"{FILE_NAME}; {heads.get('jetspec', 'no jetspec head')} has none (make it with "
                                 "python -m launch.build_pair_prior)")
        depth = None
        if heads:
            cfg = HeadConfig.load(heads.get("jetspec") or heads["bidirectional"])
            depth = cfg.block_size - 1
        configs = plan_configs(methods, budgets, depth or 15, autos, expert_off=args.expert_aware_off,
                               draft_vocab_off=args.draft_vocab_off, onednn_linear=args.cpu_linear_onednn,
                               pair_prior_off=args.pair_prior_off)
        workloads = {workload_name(w): load_workload(w) for w in parse_list(args.workload, "workload")}
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"launch.bench: {exc}") from None

    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    plan = BenchPlan(model=model, heads=heads, configs=configs, workloads=workloads, batch_sizes=batch_sizes,
                     max_new_tokens=args.max_new_tokens, num_prompts=args.num_prompts, width=args.width,
                     depth=depth, ngram_draft_tokens=args.ngram_draft_tokens, mixed_load=mixed, serving_rates=rates,
                     serving_prompts=args.serving_prompts, max_total_tokens=args.max_total_tokens,
                     expert_trace=str(Path(args.expert_trace).resolve()) if args.expert_trace else None,
                     auto_max_width=args.auto_max_width, standalone_draft=args.standalone_draft,
                     standalone_steps=args.standalone_steps, repeats=args.repeats,
                     warmup_passes=args.warmup_passes)
    print(f"[bench] {len(configs)} configurations x {len(workloads)} workloads x {len(batch_sizes)} batch sizes; "
          f"logs in {out / 'logs'}", flush=True)
    report = run_suite(plan, out / "logs", progress=lambda s: print(s, flush=True))
    write_json(report, out / "results.json")
    plots = make_plots(report, out)
    command = "python -m launch.bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    md = write_markdown(report, out, command, plots)
    print(f"[bench] wrote {out / 'results.json'}, {md} and {len(plots)} plots")
    bad = [r for r in report["results"] if r["matches_ar"] is not None and r["matches_ar"] < r["requests"]]
    for r in bad:
        print(f"[bench] WARNING: {r['label']} on {r['workload']} bs {r['batch_size']}: "
              f"{r['matches_ar']}/{r['requests']} outputs equal ar's")


if __name__ == "__main__":
    main()
