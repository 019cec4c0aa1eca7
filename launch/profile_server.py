"""Where a JETSPEC round's time goes next to a plain decode step, on real SGLang servers:

    python -m launch.profile_server [--model DIR] [--head DIR] [--budget 8] [--workload code]
        [--prompt-index 0] [--max-new-tokens 128] [--steps 20] [--cpu-linear torch|onednn] --out DIR

Starts a plain server and a JETSPEC server one after the other, profiles `--steps` scheduler steps
of each with SGLang's own torch profiler (/start_profile) while it answers one prompt greedily, and
writes DIR/profile.md: per span (SGLang's `scheduler.run_batch` and `scheduler.process_batch_result`,
the forward `step[DECODE ...]` / `step[VERIFY ...]`, and the JETSPEC phases
`jetspec.draft/tree/verify/accept`) the wall ms per occurrence and the operators' self time
inside it (with a GPU also the device time of the kernels each span launched). Traces stay in DIR/<label>/, server logs in DIR/<label>.log. Defaults: the embedded
SmolLM2 target and its shipped head.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m launch.profile_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="target folder (default: the embedded smollm2)")
    p.add_argument("--head", default=None, help="JetSpec head (default: the target's shipped head)")
    p.add_argument("--budget", type=int, default=8, help="JETSPEC node budget (default 8)")
    p.add_argument("--workload", default="code", help="bundled set (code, math, chat) or a JSONL file")
    p.add_argument("--prompt-index", type=int, default=0, help="which prompt of the workload (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="scheduler steps to profile per server")
    p.add_argument("--cpu-linear", default=None, choices=("torch", "onednn"),
                   help="CPU linear layers of both servers (SGLANG_JETSPEC_CPU_LINEAR; default: the server default)")
    p.add_argument("--top", type=int, default=8, help="operators listed per span")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    for name in ("budget", "max_new_tokens", "steps", "top"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    if args.prompt_index < 0:
        p.error(f"--prompt-index {args.prompt_index} must be >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from transformers import AutoTokenizer

    from sglang_jetspec.bench.server_profile import profile_server
    from sglang_jetspec.bench.trace_summary import format_markdown
    from sglang_jetspec.bench.workloads import load_workload
    from sglang_jetspec.integration.server_engine import head_folder
    from sglang_jetspec.integration.server_process import ServerSpec
    from sglang_jetspec.model_store import model_path
    from sglang_jetspec.reference.prompts import encode_prompts

    try:
        model = str(args.model or model_path("smollm2"))
        head = str(head_folder(args.head, model))
        items = load_workload(args.workload)
        if args.prompt_index >= len(items):
            raise ValueError(f"--prompt-index {args.prompt_index}: workload {args.workload!r} has "
                             f"{len(items)} prompts")
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"launch.profile_server: {exc}") from None
    prompt = items[args.prompt_index]
    ids = encode_prompts(AutoTokenizer.from_pretrained(model), [prompt.prompt])[0]
    env = {"SGLANG_JETSPEC_CPU_LINEAR": args.cpu_linear} if args.cpu_linear else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    runs = []
    for label, spec in (("ar", ServerSpec(model)),
                        (f"jetspec@{args.budget}", ServerSpec(model, head=head, budget=args.budget))):
        print(f"[profile] {label}: starting the server, profiling {args.steps} steps", flush=True)
        runs.append(profile_server(label, spec, ids, args.max_new_tokens, args.steps, out, env))

    lines = ["# Server step profile", "",
             f"Command: `python -m launch.profile_server {shlex.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}; prompt "
             f"{prompt.id!r} of {args.workload!r}, {len(ids)} prompt tokens, greedy, at most "
             f"{args.max_new_tokens} new tokens; CPU linear: {args.cpu_linear or 'server default'}.", "",
             "Unprofiled answer of the same prompt (after a warm-up answer):", "",
             "| server | tokens | seconds | ms per token | verify rounds | tokens per round |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        per_round = f"{r.tokens / r.rounds:.2f}" if r.rounds else "-"
        lines.append(f"| {r.label} | {r.tokens} | {r.seconds:.2f} | {1e3 * r.seconds / r.tokens:.1f} | "
                     f"{r.rounds if r.rounds is not None else '-'} | {per_round} |")
    lines += ["", "Profiled steps (span = SGLang's step or a JETSPEC phase; ms are per occurrence; the "
              "profiler's per-op cost inflates them):", ""]
    for r in runs:
        lines.append(format_markdown(f"{r.label} (trace {r.trace.relative_to(out.resolve())})", r.summaries, args.top))
    text = "\n".join(lines)
    (out / "profile.md").write_text(text + "\n")
    print(text)
    print(f"[profile] wrote {out / 'profile.md'}")


if __name__ == "__main__":
    main()
