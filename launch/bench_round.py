"""Per-round cost (head forward, tree build, tree verify at each budget) relative to one decode step.

    python -m launch.bench_round [--model DIR] [--head DIR|random] [--budgets 8,32,64]
"""

import argparse


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m launch.bench_round", description=__doc__)
    p.add_argument("--model", default=None)
    p.add_argument("--head", default=None)
    p.add_argument("--budgets", default="8,32,64")
    p.add_argument("--width", type=int, default=7)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--prompt", default="Write a Python function that merges two sorted lists into one sorted list.")
    args = p.parse_args(argv)

    from sglang_jetspec.reference.prompts import encode_prompts
    from sglang_jetspec.reference.round_cost import format_round_costs, measure_round_costs
    from sglang_jetspec.reference.runner import load_head_arg, resolve_model
    from sglang_jetspec.reference.target import HFTarget

    target = HFTarget(resolve_model(args.model))
    head = load_head_arg(args.head, target).eval()
    ids = encode_prompts(target.tokenizer, [args.prompt])[0]
    budgets = [int(b) for b in args.budgets.split(",")]
    print(format_round_costs(measure_round_costs(target, head, ids, budgets, args.width, args.repeats)))


if __name__ == "__main__":
    main()
