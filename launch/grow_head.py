"""Add identity-started layers, or more target taps, to a trained head: ``python -m launch.grow_head
--head DIR --out DIR [--num-layers N] [--target-layer-ids 1,10,18,27]``. The grown head drafts
what the original drafts (exactly with added layers, to float rounding with added taps;
sglang_jetspec/train/head_grow.py) until ``launch.train_head --init-head OUT`` trains it; the draft vocabulary, if any, is copied along. Written in the
source's dtype."""

import argparse
import os

from sglang_jetspec.core.checkpoint import load_head, save_head, stored_dtype
from sglang_jetspec.train.head_grow import grow_head, widen_taps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m launch.grow_head", description=__doc__)
    p.add_argument("--head", required=True, help="head folder to grow (published layout)")
    p.add_argument("--out", required=True, help="folder to write the grown head into")
    p.add_argument("--num-layers", type=int, default=None, help="layers of the grown head (more than it has)")
    p.add_argument("--target-layer-ids", default=None, metavar="I,J,...",
                   help="target layers the grown head reads: its current taps plus new ones (comma-separated)")
    args = p.parse_args(argv)
    if args.num_layers is None and args.target_layer_ids is None:
        raise SystemExit("nothing to grow: give --num-layers N and/or --target-layer-ids I,J,...")
    if os.path.abspath(args.head) == os.path.abspath(args.out):
        raise SystemExit("--out must differ from --head")
    taps = None
    if args.target_layer_ids is not None:
        try:
            taps = [int(x) for x in args.target_layer_ids.split(",")]
        except ValueError:
            raise SystemExit(f"--target-layer-ids {args.target_layer_ids!r}: expected comma-separated layer "
                             "numbers such as 1,10,18,27") from None
    head = load_head(args.head)  # fp32; written back in the dtype its config.json names
    grown, done = head, []
    if args.num_layers is not None:
        try:
            grown = grow_head(grown, args.num_layers)
        except ValueError as exc:
            raise SystemExit(f"--num-layers: {exc}") from None
        done.append(f"{head.config.num_hidden_layers} -> {args.num_layers} layers")
    if taps is not None:
        try:
            grown = widen_taps(grown, taps)
        except ValueError as exc:
            raise SystemExit(f"--target-layer-ids: {exc}") from None
        done.append(f"taps {head.config.target_layer_ids} -> {taps}")
    save_head(grown, args.out, dtype=stored_dtype(head.config))
    if grown.draft_vocab is not None:
        grown.draft_vocab.save(args.out)
    print(f"grew {args.head} ({', '.join(done)}) -> {args.out}")


if __name__ == "__main__":
    main()
