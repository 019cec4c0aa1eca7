"""Wall clock of the JetSpec reference decoder against plain decoding on this machine, side by side:

    python -m launch.bench_reference [--head DIR] [--budgets 8,16] [--draft-vocab on,off]
        [--prompts data/prompts/{code,math,chat}.heldout.jsonl] [--num-prompts 3] [--max-new-tokens 128]

Every prompt is decoded by `ar` and by each configuration in turn (sglang_jetspec/reference/
wall_clock.py); prints tokens/s, speedup over `ar`, accepted length and output equality per set.
`--draft-vocab on,off` measures the head with and without its draft vocabulary in the same run,
`--pair-prior on,off` with and without its n-gram tree prior (core/pair_prior.py).
`--cpu-linear onednn,torch` also times plain decoding with PyTorch's own CPU linear (`ar[torch]`)
beside the packed oneDNN one every configuration uses by default (core/packed_linear.py).
`ar` is one target forward per token through the reference decoder's own forward path
(reference/ar.py); `--ar-hf` also times Hugging Face's `generate` (`ar[hf]`, slower per token).
"""

import argparse
import json
import os


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m launch.bench_reference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="target Hugging Face folder (default: embedded SmolLM2)")
    p.add_argument("--head", default=None, help="head folder (default: the target's shipped head)")
    p.add_argument("--prompts", nargs="+", default=[f"data/prompts/{s}.heldout.jsonl" for s in ("code", "math", "chat")])
    p.add_argument("--num-prompts", type=int, default=3, help="first N prompts of each file")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--budgets", default="8,16", help="node budgets of the reference decoder")
    p.add_argument("--width", type=int, default=7)
    p.add_argument("--draft-vocab", default="on", help="on, off or on,off (both, side by side)")
    p.add_argument("--pair-prior", default="auto", help="the head folder's n-gram tree prior: auto (used when the "
                   "folder has one), on, off or on,off (both, side by side; on needs a pair_prior.safetensors)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--cpu-linear", default=None,
                   help="CPU fp32 linear backend of the target: onednn (default; core/packed_linear.py) or "
                        "torch; onednn,torch also times plain decoding with the second one, as ar[torch]")
    p.add_argument("--ar-hf", action="store_true",
                   help="also time plain decoding through Hugging Face's generate (ar[hf]) beside ar")
    p.add_argument("--json", default=None, help="also write the tallies here")
    args = p.parse_args(argv)
    try:
        args.budgets = [int(b) for b in args.budgets.split(",")]
    except ValueError:
        p.error(f"--budgets {args.budgets!r}: expected comma-separated integers, e.g. 8,16")
    if any(b < 2 for b in args.budgets):
        p.error(f"--budgets {args.budgets}: each must be >= 2 (1 is plain decoding, measured as ar anyway)")
    args.draft_vocab = [m.strip() for m in args.draft_vocab.split(",")]
    if not args.draft_vocab or any(m not in ("on", "off") for m in args.draft_vocab):
        p.error(f"--draft-vocab {','.join(args.draft_vocab)!r}: expected on, off or on,off")
    args.pair_prior = [m.strip() for m in args.pair_prior.split(",")]
    if args.pair_prior != ["auto"] and (any(m not in ("on", "off") for m in args.pair_prior)
                                        or len(set(args.pair_prior)) != len(args.pair_prior)):
        p.error(f"--pair-prior {','.join(args.pair_prior)!r}: expected auto, on, off or on,off")
    args.cpu_linear = [b.strip() for b in args.cpu_linear.split(",")] if args.cpu_linear else [None]
    if any(b not in (None, "onednn", "torch") for b in args.cpu_linear) or len(set(args.cpu_linear)) != len(args.cpu_linear):
        p.error(f"--cpu-linear {','.join(map(str, args.cpu_linear))!r}: expected onednn, torch, onednn,torch or torch,onednn")
    if args.num_prompts < 1 or args.max_new_tokens < 1:
        p.error("--num-prompts and --max-new-tokens must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
    from sglang_jetspec.reference.prompts import encode_prompts, read_prompts
    from sglang_jetspec.reference.runner import load_head_arg, resolve_model
    from sglang_jetspec.reference.target import HFTarget
    from sglang_jetspec.reference.wall_clock import format_wall_clock, run_wall_clock

    target = HFTarget(resolve_model(args.model), linear_backend=args.cpu_linear[0])
    other_ar = {}
    for b in args.cpu_linear[1:]:
        other = HFTarget(resolve_model(args.model), linear_backend=b)
        other_ar[f"ar[{other.linear_backend}]"] = other
    heads = {(m, pp): load_head_arg(args.head, target, draft_vocab=m == "on", pair_prior=pp != "off")
             for m in args.draft_vocab for pp in args.pair_prior}
    if any(m == "on" and h.draft_vocab is None for (m, _), h in heads.items()):
        raise SystemExit(f"--draft-vocab on: the head {args.head or '(shipped)'} has no draft_vocab.safetensors "
                         "(python -m launch.draft_vocab makes one); use --draft-vocab off")
    if any(pp == "on" and h.pair_prior is None for (_, pp), h in heads.items()):
        raise SystemExit(f"--pair-prior on: the head {args.head or '(shipped)'} has no pair_prior.safetensors "
                         "(python -m launch.build_pair_prior makes one); use --pair-prior off")
    decoders = {}
    for b in args.budgets:
        for (m, pp), head in heads.items():
            label = (f"reference@{b}" + ("" if m == "on" or len(args.draft_vocab) == 1 else "-fullvocab")
                     + ("" if pp == "on" or len(args.pair_prior) == 1 else "-noprior"))
            decoders[label] = ReferenceDecoder(target, head, TreeSettings(budget=b, width=args.width))
    prompts = {os.path.basename(f).removesuffix(".jsonl"): encode_prompts(target.tokenizer, read_prompts(f)[: args.num_prompts])
               for f in args.prompts}
    vocab = next((h for (m, _), h in heads.items() if m == "on"), None)
    shown = os.path.relpath(target.model_dir) if os.path.abspath(target.model_dir).startswith(os.getcwd()) else target.model_dir
    print(f"target {shown}; head {args.head or '(shipped)'}"
          + (f"; draft vocabulary {len(vocab.draft_vocab)} tokens" if vocab is not None else "")
          + f"; {args.threads} thread(s); CPU linear {target.linear_backend}"
          + "".join(f" (and {lab} for plain decoding)" for lab in other_ar)
          + (" (and ar[hf]: Hugging Face generate)" if args.ar_hf else "")
          + f"; greedy, {args.max_new_tokens} new tokens max", flush=True)

    def progress(name, results):
        print(f"  {name}: " + ", ".join(f"{k} {len(r.output_ids) / r.seconds:.1f} tok/s" for k, r in results.items()),
              flush=True)

    tallies = run_wall_clock(target, decoders, prompts, args.max_new_tokens, progress, other_ar, hf_ar=args.ar_hf)
    print()
    print(format_wall_clock(tallies))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({s: {k: vars(t) for k, t in per.items()} for s, per in tallies.items()}, f, indent=1)
    bad = [f"{s} {k}: {m}" for s, per in tallies.items() for k, t in per.items() for m in t.mismatch]
    if bad:
        raise SystemExit("outputs differ from plain decoding beyond a near-tie:\n" + "\n".join(bad))


if __name__ == "__main__":
    main()
