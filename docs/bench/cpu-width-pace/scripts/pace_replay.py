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
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "cpu-qwen3moe-prior-auto", "scripts"))
from decay_replay import B, Sim, load_rounds  # noqa: E402

import sglang_jetspec.integration.budget_policy as bp  # noqa: E402


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


class DriftSim(Sim):
    """decay_replay's simulation with every step's time (head included) scaled by the drift of
    its step index; static() and policy() both call step_s once per step, in order."""

    def __init__(self, rounds_by_name, order, bs, args, seed):
        super().__init__(rounds_by_name, order, bs, args)
        rng = random.Random(1000 + seed)
        self.factor = []
        while len(self.factor) < len(self.steps):
            f = rng.uniform(1 - args.drift, 1 + args.drift)
            self.factor += [f] * rng.randint(args.phase_min, args.phase_max)
        self.factor = [f * math.exp(rng.gauss(0, args.noise)) for f in self.factor[:len(self.steps)]]
        self.k = 0

    def draft_s(self, rows):
        return super().draft_s(rows) * self.factor[self.k]

    def step_s(self, width, rows):
        s = (self.a.verify_ms + self.a.row_ms * self.bs * width) / 1e3 * self.factor[self.k] + self.draft_s(rows)
        self.k += 1
        return s

    def static(self, width):
        self.k = 0
        return super().static(width)

    def policy(self, seed, pace_alpha=0.0, base_alpha=0.2):
        self.k = 0
        plain = bp.BudgetPolicy

        def make(*a, **kw):
            pol = plain(*a, **kw, **({"pace_alpha": pace_alpha} if pace_alpha else {}))
            pol.measured_alpha = base_alpha
            return pol

        bp.BudgetPolicy = make  # decay_replay builds its policy through this module attribute
        try:
            return super().policy(seed)
        finally:
            bp.BudgetPolicy = plain


def main():
    args = parse_args()
    rounds_by_name = load_rounds(args.rounds)
    variants = [tuple(float(x) for x in v.split(":")) for v in args.variants.split(",")]
    print(f"step = ({args.verify_ms} + {args.row_ms} ms x rows + head {args.draft_ms} + {args.draft_row_ms} ms x head rows)"
          f" x drift (+-{args.drift:g}, phases {args.phase_min}-{args.phase_max} steps) x noise (sigma {args.noise:g});"
          f" policy tokens/s over the best static width's, mean (min) over seeds 0-{args.seeds - 1}")
    totals = {v: [] for v in variants}
    for order in args.orders:
        for bs in (int(x) for x in args.batch_sizes.split(",")):
            res = {v: [] for v in variants}
            widths = []
            for seed in range(args.seeds):
                run = DriftSim(rounds_by_name, order.split(","), bs, args, seed)
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
