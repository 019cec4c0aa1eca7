"""Rebuild the bundled prompt sets: ``python -m launch.build_prompts --out data/prompts``.

More training prompts beside them, same held-out split, only the prompts data/prompts does not
train on: ``python -m launch.build_prompts --out data/prompts-more --per-category max --beyond
data/prompts --categories code chat``."""

import argparse

from sglang_jetspec.train.prompt_sets import (CATEGORIES, DEFAULT_HELDOUT, DEFAULT_TRAIN, beyond,
                                              build_prompt_sets, write_prompt_sets)


def _per_category(text: str) -> int | None:
    if text == "max":
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a count >= 0 or 'max'")
    return n


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m launch.build_prompts", description=__doc__)
    parser.add_argument("--out", default="data/prompts", help="output folder (default data/prompts)")
    parser.add_argument("--per-category", type=_per_category, default=DEFAULT_TRAIN,
                        help=f"train prompts per category, or max (every candidate left; default {DEFAULT_TRAIN})")
    parser.add_argument("--heldout", type=int, default=DEFAULT_HELDOUT, help="held-out prompts per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    parser.add_argument("--beyond", default=None, metavar="DIR",
                        help="write only the train prompts the prompt folder DIR does not train on (it must "
                             "hold out the same prompts: same --seed and --heldout); no held-out files")
    args = parser.parse_args(argv)
    sets = build_prompt_sets(args.per_category, args.heldout, args.seed, tuple(args.categories))
    extra = None
    if args.beyond is not None:
        sets = beyond(sets, args.beyond)
        extra = {"beyond": args.beyond, "heldout": args.heldout}
    for path in write_prompt_sets(sets, args.out, args.seed, extra):
        print(path)


if __name__ == "__main__":
    main()
