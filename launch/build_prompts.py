"""Rebuild the bundled prompt sets: ``python -m launch.build_prompts --out data/prompts``."""

import argparse

from sglang_jetspec.train.prompt_sets import (CATEGORIES, DEFAULT_HELDOUT, DEFAULT_TRAIN, build_prompt_sets,
                                              write_prompt_sets)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m launch.build_prompts", description=__doc__)
    parser.add_argument("--out", default="data/prompts", help="output folder (default data/prompts)")
    parser.add_argument("--per-category", type=int, default=DEFAULT_TRAIN, help="train prompts per category")
    parser.add_argument("--heldout", type=int, default=DEFAULT_HELDOUT, help="held-out prompts per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    args = parser.parse_args(argv)
    sets = build_prompt_sets(args.per_category, args.heldout, args.seed, tuple(args.categories))
    for path in write_prompt_sets(sets, args.out, args.seed):
        print(path)


if __name__ == "__main__":
    main()
