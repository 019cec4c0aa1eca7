"""Add identity-started layers to a trained head: ``python -m launch.grow_head --head DIR --out DIR
--num-layers N``. The grown head drafts exactly what the original drafts (sglang_jetspec/train/
head_grow.py) until ``launch.train_head --init-head OUT`` trains it; the draft vocabulary, if
any, is copied along. Written in the source's dtype."""

import argparse
import os

from sglang_jetspec.core.checkpoint import load_head, save_head, stored_dtype
from sglang_jetspec.train.head_grow import grow_head


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m launch.grow_head", description=__doc__)
    p.add_argument("--head", required=True, help="head folder to grow (published layout)")
    p.add_argument("--out", required=True, help="folder to write the grown head into")
    p.add_argument("--num-layers", type=int, required=True, help="layers of the grown head (more than it has)")
    args = p.parse_args(argv)
    if os.path.abspath(args.head) == os.path.abspath(args.out):
        raise SystemExit("--out must differ from --head")
    head = load_head(args.head)  # fp32; written back in the dtype its config.json names
    try:
        grown = grow_head(head, args.num_layers)
    except ValueError as exc:
        raise SystemExit(f"--num-layers: {exc}") from None
    save_head(grown, args.out, dtype=stored_dtype(head.config))
    if grown.draft_vocab is not None:
        grown.draft_vocab.save(args.out)
    print(f"grew {args.head} from {head.config.num_hidden_layers} to {args.num_layers} layers -> {args.out}")


if __name__ == "__main__":
    main()
