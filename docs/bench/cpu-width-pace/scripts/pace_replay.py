"""The width policy on recorded rounds when the machine's speed drifts: would pricing widths as
pace x base (a shared pace followed from every round) keep it closer to the best static width
than its per-width running means?

    python docs/bench/cpu-width-pace/scripts/pace_replay.py --rounds build/rec_{code,math,chat}.pkl \
        --orders code,math,chat chat,code,math --batch-sizes 1,4 --variants 0:0.2,0.2:0.2,0.2:0.05

The PKL files are what docs/bench/cpu-qwen3moe-prior-auto/scripts/curve_replay.py records (each
round's budget-16 tree, accepted path and bonus token). As in decay_replay.py there, each order
concatenates the workloads twice, the rounds are dealt to bs streams, a step verifies the
best-first prefix of the planned width of one round per stream and costs
    (verify_ms + row_ms * bs * width + head) * drift(step) * noise,
head = draft_ms + draft_row_ms * bs * rows when the head runs (rows = width - 1, 15 on a curve
probe). drift: piecewise constant, phases of --phase-min..--phase-max steps, each at a factor
drawn uniformly from [1 - --drift, 1 + --drift]; noise: lognormal, sigma --noise, per step. The
best static width is judged on the same drifted times. A variant PACE:BASE sets the policy's
pace_alpha and measured_alpha (0:0.2 is the policy without a pace). Printed: policy tokens per
second of synthetic time over the best static width's, mean (min) over --seeds seeds (each seed
draws its own drift, noise and exploration).

The pace was tried and NOT kept (no gain; see ../README.md): variants with PACE > 0 need
`git apply docs/bench/cpu-width-pace/scripts/pace.patch` first (revert it afterwards).
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "cpu-qwen3moe-prior-auto", "scripts"))
from decay_replay import B, cut  # noqa: E402

import sglang_jetspec.integration.budget_policy as bp  # noqa: E402
from sglang_jetspec.core.budget_controller import tree_prefix  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", nargs="+", required=True)
    p.add_argument("--orders", nargs="+", required=True)
    p.add_argument("--batch-sizes", default="1,4")
    p.add_argument("--variants", default="0:0.2,0.2:0.2", help="PACE:BASE pairs (pace_alpha:measured_alpha)")
    p.add_argument("--verify-ms", type=float, default=28.0)
    p.add_argument("--row-ms", type=float, default=1.0)
    p.add_argument("--draft-ms", type=float, default=1.0)
    p.add_argument("--draft-row-ms", type=float, default=0.15)
    p.add_argument("--drift", type=float, default=0.15)
    p.add_argument("--phase-min", type=int, default=50)
    p.add_argument("--phase-max", type=int, default=300)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--seeds", type=int, default=6)
    return p.parse_args()


class Run:
    def __init__(self, steps, bs, args, seed):
        self.steps, self.bs, self.a = steps, bs, args
        rng = random.Random(1000 + seed)
        self.factor = []
        while len(self.factor) < len(steps):
            f = rng.uniform(1 - args.drift, 1 + args.drift)
            self.factor += [f] * rng.randint(args.phase_min, args.phase_max)
        self.factor = [f * math.exp(rng.gauss(0, args.noise)) for f in self.factor[:len(steps)]]

    def head_s(self, k, rows):
        a = self.a
        return 0.0 if rows == 0 else (a.draft_ms + a.draft_row_ms * self.bs * rows) / 1e3 * self.factor[k]

    def step_s(self, k, width, rows):
        return (self.a.verify_ms + self.a.row_ms * self.bs * width) / 1e3 * self.factor[k] + self.head_s(k, rows)

    def static(self, width):
        tokens = sum(cut(t, p, width)[1] for st in self.steps for t, p, _ in st)
        seconds = sum(self.step_s(k, max(min(width, t.n) for t, _, _ in st), width - 1)
                      for k, st in enumerate(self.steps))
        return tokens / seconds

    def policy(self, seed, pace_alpha, base_alpha):
        pol = bp.BudgetPolicy(B, draft_depth=B - 1, seed=seed, **({"pace_alpha": pace_alpha} if pace_alpha else {}))
        pol.measured_alpha = base_alpha
        tokens = seconds = 0.0
        for k, st in enumerate(self.steps):
            w = pol.plan(self.bs, None)
            trees, budgets, paths, bonus = [], [], [], []
            for tree, path, bonus_token in st:
                b, n = cut(tree, path, w)
                trees.append(tree_prefix(tree, b))
                budgets.append(b)
                paths.append(path[:n])
                bonus.append(int(tree.tokens[path[n]]) if n < len(path) else bonus_token)
                tokens += n
            probe = pol.probe
            rows = B - 1 if probe else min(w, B) - 1
            if rows:
                pol.note_draft(self.bs, rows, self.head_s(k, rows))
            s = self.step_s(k, max(budgets), rows)
            pol.observe(trees, budgets, paths, bonus, s, probe_trees=[r[0] for r in st] if probe else None,
                        probe_budgets=[r[0].n for r in st] if probe else None)
            seconds += s
        return tokens / seconds


def main():
    args = parse_args()
    rounds_by_name = {}
    for path in args.rounds:
        name = path.rsplit("/", 1)[-1].removesuffix(".pkl").removeprefix("rec_")
        with open(path, "rb") as f:
            rounds_by_name[name] = [r for r in pickle.load(f) if r is not None]
    variants = [tuple(float(x) for x in v.split(":")) for v in args.variants.split(",")]
    print(f"step = ({args.verify_ms} + {args.row_ms} ms x rows + head {args.draft_ms} + {args.draft_row_ms} ms x head rows)"
          f" x drift (+-{args.drift:g}, phases {args.phase_min}-{args.phase_max} steps) x noise (sigma {args.noise:g});"
          f" policy tokens/s over the best static width's, mean (min) over seeds 0-{args.seeds - 1}")
    totals = {v: [] for v in variants}
    for order in args.orders:
        rounds = []
        for name in order.split(",") * 2:
            rounds += rounds_by_name[name]
        for bs in (int(x) for x in args.batch_sizes.split(",")):
            streams = [rounds[i::bs] for i in range(bs)]
            steps = [[s[k] for s in streams] for k in range(min(len(s) for s in streams))]
            res = {v: [] for v in variants}
            widths = []
            for seed in range(args.seeds):
                run = Run(steps, bs, args, seed)
                static = {w: run.static(w) for w in range(1, B + 1)}
                best = max(static, key=static.get)
                widths.append(best)
                for v in variants:
                    res[v].append(run.policy(seed, *v) / static[best])
            line = f"{order:16s} bs {bs}: best static widths {sorted(set(widths))}"
            for v in variants:
                r = res[v]
                totals[v] += r
                line += f" | pace {v[0]:g} base {v[1]:g}: {sum(r) / len(r):.3f} ({min(r):.3f})"
            print(line, flush=True)
    print("all cells:" + "".join(f" | pace {v[0]:g} base {v[1]:g}: {sum(r) / len(r):.3f} ({min(r):.3f})"
                                 for v, r in totals.items()))


if __name__ == "__main__":
    main()
