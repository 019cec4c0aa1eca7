"""Mean accepted length (tokens committed per target forward, bonus included) of a trained head,
per node budget and prompt file, through the greedy reference decoder:
``python -m launch.eval_head --head DIR --prompts FILE [FILE...] [--budgets 8,16,32,64]``.
With ``--temperature T`` (> 0) the decoder samples instead (its lossless tree sampling; prompt i
seeded with ``--seed`` + i), the accepted length a sampling user gets; ``--sampling-rule walk``
measures the rule SGLang's server path uses (follow the sampled child of the greedy tree) instead
of the default recursive rejection sampling over redrawn sibling groups.
With ``--compare-head DIR`` (e.g. the bidirectional baseline) the two heads side by side.
Trees use the head folder's n-gram prior (``pair_prior.safetensors``, launch.build_pair_prior)
when it has one; ``--pair-prior off`` builds plain best-first trees, ``--pair-prior compare``
measures each head both ways side by side.
With ``--heldout-data REGEN_DIR`` also the teacher-forced accuracy per block depth on held-out
answers of the target (the trainer's own split), the cheap number that tracks training.
"""

import argparse
import json
import math
import os

import torch

from sglang_jetspec.core.checkpoint import load_head
from sglang_jetspec.reference.decoder import SAMPLING_RULES
from sglang_jetspec.train.evaluate import mean_accepted_length


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m launch.eval_head", description=__doc__)
    p.add_argument("--head", required=True, help="trained head folder")
    p.add_argument("--model", default=None, help="target Hugging Face folder (default: embedded SmolLM2)")
    p.add_argument("--prompts", nargs="+", required=True, help="prompt JSONL files")
    p.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16, 32, 64])
    p.add_argument("--width", type=int, default=7, help="top-k per depth of the draft tree")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy (default); > 0 samples from the target at this temperature, losslessly")
    p.add_argument("--seed", type=int, default=0, help="with --temperature: prompt i samples with seed + i")
    p.add_argument("--sampling-rule", choices=SAMPLING_RULES, default="rrs",
                   help="with --temperature: rrs (redrawn sibling groups, recursive rejection sampling; "
                        "default) or walk (the greedy tree, follow the child the target samples: the "
                        "server's rule)")
    p.add_argument("--num-prompts", type=int, default=None, help="first N prompts of each file")
    p.add_argument("--compare-head", default=None, help="a second head folder, shown side by side")
    p.add_argument("--draft-vocab", choices=("on", "off"), default="on",
                   help="draft over each head folder's draft_vocab.safetensors when it has one (off: the whole "
                        "vocabulary)")
    p.add_argument("--pair-prior", choices=("on", "off", "compare"), default="on",
                   help="shape trees with each head folder's pair_prior.safetensors when it has one (off: plain "
                        "best-first trees; compare: each head both ways, side by side)")
    p.add_argument("--heldout-data", default=None, metavar="REGEN_DIR",
                   help="also print per-depth accuracy on the held-out answers of this regenerated data "
                        "(split by prompt hash as launch.train_head splits it)")
    p.add_argument("--val-percent", type=float, default=3.0, help="the split's held-out share (as in training)")
    p.add_argument("--heldout-seqs", type=int, default=48, help="held-out answers scored")
    p.add_argument("--heldout-anchors", type=int, default=32, help="random anchors per held-out answer")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def head_label(head, folder: str) -> str:
    kind = "causal" if head.config.causal_head else "bidirectional"
    return f"{kind}:{os.path.basename(os.path.normpath(folder))}"


def format_table(results: dict, budgets: list[int]) -> str:
    """results[label][file][budget] = tau -> one text table (a ratio column when two heads)."""
    labels = list(results)
    files = list(next(iter(results.values())))
    cols = [f"{lab} @{b}" for b in budgets for lab in labels]
    if len(labels) == 2:
        cols = [c for b in budgets for c in (f"{labels[0]} @{b}", f"{labels[1]} @{b}", f"ratio @{b}")]
    width = max(len(f) for f in files + ["prompts"])
    lines = ["prompts".ljust(width) + " | " + " | ".join(cols)]
    for f in files:
        cells = []
        for b in budgets:
            vals = [results[lab][f][b] for lab in labels]
            cells += [f"{v:.3f}" for v in vals]
            if len(labels) == 2:
                cells.append(f"{vals[0] / vals[1]:.3f}" if vals[1] else "-")
        lines.append(f.ljust(width) + " | " + " | ".join(c.rjust(len(h)) for c, h in zip(cells, cols)))
    return "\n".join(lines)


def depth_line(label: str, hf_target, head, seqs, anchors: int, depths: int = 6) -> str:
    """One line: the head's teacher-forced argmax accuracy at block depths 1..`depths`."""
    from sglang_jetspec.train.evaluate import depth_metrics
    from sglang_jetspec.train.teacher import FrozenTarget

    m = depth_metrics(FrozenTarget(hf_target.model), head, seqs, anchors)
    accs = " ".join(f"d{i + 1} {a:.1%}" for i, a in enumerate(m.accuracy[:depths]))
    return f"{label} held-out accuracy per depth ({len(seqs)} answers x {anchors} anchors, {m.slots} slots): {accs}"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if any(b < 1 for b in args.budgets):
        raise SystemExit(f"budgets {args.budgets} must all be >= 1")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise SystemExit(f"--temperature {args.temperature} must be a finite number >= 0 (0 = greedy)")
    from sglang_jetspec.reference.prompts import encode_prompts, read_prompts
    from sglang_jetspec.reference.runner import resolve_model
    from sglang_jetspec.reference.target import HFTarget

    target = HFTarget(resolve_model(args.model))
    prompts = {}
    for f in args.prompts:
        stem = os.path.basename(f).removesuffix(".jsonl")
        prompts[stem] = encode_prompts(target.tokenizer, read_prompts(f)[: args.num_prompts])
    folders = [args.head] + ([args.compare_head] if args.compare_head else [])
    heldout = None
    if args.heldout_data:
        from sglang_jetspec.train.dataset import DEFAULT_MAX_LEN, load_sequences, split_validation

        # cut and split exactly as launch.train_head does by default, so these are its held-out answers
        seqs = load_sequences([args.heldout_data], DEFAULT_MAX_LEN)
        _, heldout = split_validation(seqs, args.val_percent, args.heldout_seqs)
        if not heldout:
            raise SystemExit(f"--heldout-data {args.heldout_data}: no held-out answers at --val-percent {args.val_percent}")
    mode = f" (temperature {args.temperature:g}, {args.sampling_rule})" if args.temperature > 0 else ""
    results, depth_lines = {}, []
    runs = []  # (folder, use the prior)
    for folder in folders:
        runs += [(folder, True), (folder, False)] if args.pair_prior == "compare" else [(folder, args.pair_prior == "on")]
    for folder, use_prior in runs:
        head = load_head(folder, device=str(target.device), dtype=target.dtype,
                         draft_vocab=args.draft_vocab == "on", pair_prior=use_prior)
        if use_prior and head.pair_prior is None and args.pair_prior == "compare":
            raise SystemExit(f"--pair-prior compare: {folder} has no pair_prior.safetensors "
                             "(python -m launch.build_pair_prior writes one)")
        label = head_label(head, folder)
        if args.pair_prior == "compare":
            label += "+prior" if use_prior else "-prior"
        if label in results:
            label += "#2"
        results[label] = {}
        if heldout is not None and (args.pair_prior != "compare" or use_prior):
            depth_lines.append(depth_line(label, target, head, heldout, args.heldout_anchors))
            print(depth_lines[-1], flush=True)
        for stem, ids in prompts.items():
            results[label][stem] = {}
            for b in args.budgets:
                rep = mean_accepted_length(target, head, ids, b, args.max_new_tokens, args.width,
                                           args.temperature, args.seed, args.sampling_rule)
                results[label][stem][b] = rep.mean_accepted
                print(f"{label} {stem} budget {b}{mode}: mean accepted length {rep.mean_accepted:.3f} "
                      f"({rep.tokens} tokens / {rep.rounds} rounds)", flush=True)
    print()
    if args.temperature > 0:
        print(f"sampled at temperature {args.temperature:g} (seed {args.seed} + prompt index), "
              f"sampling rule {args.sampling_rule}")
    print(format_table(results, args.budgets))
    if depth_lines:
        print("\n".join([""] + depth_lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
