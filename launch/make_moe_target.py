"""Make the embedded MoE target (issue 5): distil SmolLM2 into a small Qwen3-MoE, then export it.

    python -m launch.make_moe_target train --run build/moe/run --time-budget-min 70
    python -m launch.make_moe_target export --run build/moe/run --out models/qwen3moe-tiny

`train` resumes from --run when it holds a state; `export` rounds to bf16, measures held-out
agreement with SmolLM2 and the router statistics on the exported weights, and writes the folder
(config, safetensors, tokenizer, README.md with the recipe and the numbers).
"""

from __future__ import annotations

import argparse
import json
import sys

from sglang_jetspec.train.moe_target.config import MoeTargetSpec


def _teacher_dir(arg: str | None) -> str:
    if arg:
        return arg
    from sglang_jetspec.model_store import model_path

    return str(model_path("smollm2"))


def cmd_train(a) -> None:
    from sglang_jetspec.train.moe_target.distill import DistillSettings, train

    spec = MoeTargetSpec(hidden_size=a.hidden, num_layers=a.layers, num_experts=a.experts, top_k=a.top_k,
                         moe_intermediate_size=a.moe_intermediate)
    s = DistillSettings(run_dir=a.run, teacher_dir=_teacher_dir(a.teacher), data_dirs=a.data,
                        feature_cache=a.feature_cache, steps=a.steps, seqs_per_step=a.seqs_per_step, lr=a.lr,
                        warmup_steps=a.warmup_steps, balance_coef=a.balance_coef, seed=a.seed, threads=a.threads,
                        eval_every=a.eval_every, save_every=a.save_every, time_budget_min=a.time_budget_min,
                        spec=spec)
    last = train(s, log=lambda m: print(f"[moe-target] {m}", flush=True))
    print(json.dumps(last))


def cmd_export(a) -> None:
    from sglang_jetspec.train.moe_target.report import export_with_report

    report = export_with_report(a.run, _teacher_dir(a.teacher), a.out, val_seqs=a.val_seqs,
                                stats_seqs=a.stats_seqs, recipe=a.recipe)
    print(json.dumps(report, indent=1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m launch.make_moe_target", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="distil (resumes from --run)")
    t.add_argument("--run", required=True, help="run folder: state.pt, log.jsonl, config.json")
    t.add_argument("--teacher", default=None, help="SmolLM2 HF folder (default: the prepared embedded one)")
    t.add_argument("--data", nargs="+", default=["data/regen/smollm2"], help="regenerated answer folders")
    t.add_argument("--feature-cache", default=None, help="SmolLM2 top-k cache (read only); rows outside it use CE")
    t.add_argument("--steps", type=int, default=750)
    t.add_argument("--seqs-per-step", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup-steps", type=int, default=30)
    t.add_argument("--balance-coef", type=float, default=0.1,
                   help="weight of the per-layer Switch balance loss (mean over layers)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--eval-every", type=int, default=100)
    t.add_argument("--save-every", type=int, default=25)
    t.add_argument("--time-budget-min", type=float, default=None,
                   help="stop (and save) after this many minutes of this invocation; rerun to resume")
    t.add_argument("--hidden", type=int, default=MoeTargetSpec.hidden_size)
    t.add_argument("--layers", type=int, default=MoeTargetSpec.num_layers)
    t.add_argument("--experts", type=int, default=MoeTargetSpec.num_experts)
    t.add_argument("--top-k", type=int, default=MoeTargetSpec.top_k)
    t.add_argument("--moe-intermediate", type=int, default=MoeTargetSpec.moe_intermediate_size)
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("export", help="bf16 folder + README with held-out agreement and router stats")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--teacher", default=None)
    e.add_argument("--val-seqs", type=int, default=130, help="held-out sequences for agreement")
    e.add_argument("--stats-seqs", type=int, default=130, help="held-out sequences for router statistics")
    e.add_argument("--recipe", default=None, help="the exact train command line, recorded in the README")
    e.set_defaults(fn=cmd_export)
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main(sys.argv[1:])
