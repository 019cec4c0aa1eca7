"""Turn a training output folder into a shippable head: ``python -m launch.export_head --head DIR
--out DIR [--dtype bfloat16]``. Loads strictly (the published layout), casts, writes config.json +
model.safetensors only (no trainer state), and copies the training log when there is one."""

import argparse
import os
import shutil

from sglang_jetspec.core.checkpoint import DTYPES, load_head, save_head


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m launch.export_head", description=__doc__)
    p.add_argument("--head", required=True, help="head folder written by launch.train_head")
    p.add_argument("--out", required=True, help="folder to write the exported head into")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    args = p.parse_args(argv)
    if os.path.abspath(args.head) == os.path.abspath(args.out):
        raise SystemExit("--out must differ from --head (the export drops the trainer state)")
    head = load_head(args.head)
    save_head(head, args.out, dtype=DTYPES[args.dtype])
    if head.draft_vocab is not None:  # the optional draft vocabulary travels with the weights
        head.draft_vocab.save(args.out)
    log = os.path.join(args.head, "train_log.jsonl")
    if os.path.isfile(log):
        shutil.copy(log, os.path.join(args.out, "train_log.jsonl"))
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    print(f"exported {args.head} -> {args.out} ({args.dtype}, {size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
