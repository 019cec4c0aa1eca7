"""Time the host's draft-tree construction for a batch: build_tree_from_top once per request
(core/tree.py; what the worker called until 2026-12-07) against build_trees_from_top (one table
check and one host copy for the batch) with the Python builders and with the compiled ones
(core/tree_native.py, what the worker uses), with and without the n-gram prior, on draft tables
shaped like the server's, and check that all three give the same trees.

    python -m launch.bench_tree_build --head models/smollm2-135m-jetspec --data data/regen/smollm2

The tables: for each request an anchor inside a regenerated answer; row d holds the answer's
token d+1 places ahead (at rank 0 with probability --hit, else at a random rank or absent) among
candidates drawn from the prior's unigram counts, with log-probs from a softmax over random
logits. The prior then meets real bigrams and trigrams, as in serving.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from sglang_jetspec.core.pair_prior import PairPrior
from sglang_jetspec.core.tree import build_tree_from_top, build_trees_from_top, limits_for_remaining


def _answers(folder: str, limit: int) -> list[list[int]]:
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl"):
            with open(os.path.join(folder, name)) as f:
                for line in f:
                    ids = json.loads(line)["output_ids"]
                    if len(ids) >= 40:
                        out.append(ids)
                    if len(out) >= limit:
                        return out
    return out


def make_tables(answers, prior: PairPrior, bs: int, rows: int, pool: int, hit: float, g: torch.Generator):
    """(roots, prev tokens, top_vals [bs, rows, pool], top_ids) for bs requests."""
    uni = prior.unigram.double() + 1
    roots, prev = [], []
    ids = torch.multinomial(uni, bs * rows * pool, replacement=True, generator=g).view(bs, rows, pool)
    for i in range(bs):
        seq = answers[int(torch.randint(len(answers), (), generator=g))]
        j = int(torch.randint(1, len(seq) - rows - 1, (), generator=g))
        roots.append(seq[j])
        prev.append(seq[j - 1])
        for d in range(rows):
            u = float(torch.rand((), generator=g))
            if u < hit:
                ids[i, d, 0] = seq[j + 1 + d]
            elif u < hit + (1 - hit) / 2:
                ids[i, d, int(torch.randint(1, pool, (), generator=g))] = seq[j + 1 + d]
    logits = 2.5 * torch.randn(bs, rows, 4 * pool, generator=g)
    vals = torch.log_softmax(logits, -1).topk(pool, -1).values
    return roots, prev, vals, ids


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--head", default="models/smollm2-135m-jetspec", help="head folder with pair_prior.safetensors")
    ap.add_argument("--data", default="data/regen/smollm2", help="folder of regenerated answers (*.jsonl)")
    ap.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    ap.add_argument("--budgets", default="16,32,64")
    ap.add_argument("--width", type=int, default=7)
    ap.add_argument("--rows", type=int, default=15, help="draft depths the head gives (block size - 1)")
    ap.add_argument("--hit", type=float, default=0.6, help="chance the answer's token is a row's rank 0")
    ap.add_argument("--repeats", type=int, default=20, help="timed builds per cell (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    prior = PairPrior.load(args.head)
    if prior is None:
        raise SystemExit(f"{args.head} has no pair_prior.safetensors")
    prior.prepare()
    pool = prior.settings.pool
    answers = _answers(args.data, 2000)
    if not answers:
        raise SystemExit(f"{args.data}: no answers of 40 tokens or more")
    g = torch.Generator().manual_seed(args.seed)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    budgets = [int(x) for x in args.budgets.split(",")]
    print(f"prior of {args.head} (pool {pool}, {len(prior)} bigrams); width {args.width}, {args.rows} rows; "
          f"median of {args.repeats} builds, ms per batch; torch threads {torch.get_num_threads()}")
    print(f"{'prior':>5} {'budget':>6} {'batch':>5} {'per request':>12} {'batched py':>10} {'batched':>8} "
          f"{'ratio':>6} {'nodes':>6}")
    for use in (prior, None):
        for budget in budgets:
            b_cap, depth = limits_for_remaining(budget, args.rows, None)
            for bs in sizes:
                roots, prev, vals, ids = make_tables(answers, prior, bs, args.rows, pool, args.hit, g)
                if use is None:  # the worker asks for the width's columns only without a prior
                    vals, ids = vals[:, :, :args.width].contiguous(), ids[:, :, :args.width].contiguous()

                def one_by_one():
                    return [build_tree_from_top(roots[i], vals[i], ids[i], b_cap, args.width, depth,
                                                prior=use, prev_token=prev[i]) for i in range(bs)]

                def together(native=True):
                    return build_trees_from_top(roots, vals, ids, [b_cap] * bs, [args.width] * bs, [depth] * bs,
                                                use, prev, native=native)

                def together_python():
                    return together(native=False)

                ref = one_by_one()
                for got in (together(), together_python()):
                    for a, r in zip(got, ref):
                        for f in ("tokens", "parents", "depths", "ranks", "scores"):
                            if not torch.equal(getattr(a, f), getattr(r, f)):
                                raise SystemExit(f"budget {budget} batch {bs}: the batched trees differ in {f}")
                t_ref, t_py, t_got = (_median_ms(fn, args.repeats) for fn in (one_by_one, together_python, together))
                nodes = sum(t.n for t in ref) / bs
                print(f"{'on' if use else 'off':>5} {budget:>6} {bs:>5} {t_ref:>12.2f} {t_py:>10.2f} {t_got:>8.2f} "
                      f"{t_ref / t_got:>6.2f} {nodes:>6.1f}", flush=True)
    print("every batched tree equals its one-request tree")


if __name__ == "__main__":
    main()
