"""The width policy on recorded rounds, with a known step time: how close does it get to the best
static width, and how does that depend on EMP_DECAY (how fast a rank's observed acceptance
fades once the rank is no longer verified)?

    python docs/bench/cpu-qwen3moe-prior-auto/scripts/decay_replay.py --rounds build/rec_{code,math,chat}.pkl \
        --orders code,math,chat chat,code,math math,chat,code --batch-sizes 1,4 --decays 0.01,0.1,0.2

The PKL files are what curve_replay.py records (each round's budget-16 tree, accepted path and
bonus token, reference decoder, greedy). Each order concatenates the workloads twice (a server
meeting one workload after another); at batch size bs the rounds are dealt to bs streams and
each step verifies one round of each. A step verifies, per request, the best-first prefix of the
width the policy plans (its accepted path is the recorded one cut at the first node outside the
prefix, the bonus then that node's token) and costs
    verify_ms + row_ms * bs * width + (draft_ms + draft_row_ms * bs * rows if rows else 0)
with rows = width - 1 head rows (15 on a curve probe); the policy is told the step and the head
forward times as the worker tells it. Printed: the policy's committed tokens per second of
synthetic time over the best static width's, mean and minimum over seeds 0-5.
"""

from __future__ import annotations

import argparse
import pickle

import sglang_jetspec.integration.budget_policy as bp
from sglang_jetspec.core.budget_controller import tree_prefix

B = 16  # the recorded trees' budget


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", nargs="+", required=True, help="curve_replay.py recordings, one per workload")
    p.add_argument("--orders", nargs="+", required=True, help="workload orders, e.g. code,math,chat")
    p.add_argument("--batch-sizes", default="1,4")
    p.add_argument("--decays", default="0.01,0.1")
    p.add_argument("--verify-ms", type=float, default=28.0)
    p.add_argument("--row-ms", type=float, default=1.0)
    p.add_argument("--draft-ms", type=float, default=1.0)
    p.add_argument("--draft-row-ms", type=float, default=0.15)
    p.add_argument("--seeds", type=int, default=6)
    return p.parse_args()


def cut(tree, path, width):
    """(verified nodes, accepted path length) of the best-first prefix of this width."""
    b = min(width, tree.n)
    return b, next((k for k, j in enumerate(path) if j >= b), len(path))


class Sim:
    def __init__(self, rounds_by_name, order, bs, args):
        rounds = []
        for name in order * 2:
            rounds += rounds_by_name[name]
        streams = [rounds[i::bs] for i in range(bs)]
        self.steps = [[s[k] for s in streams] for k in range(min(len(s) for s in streams))]
        self.bs, self.a = bs, args

    def draft_s(self, rows):
        a = self.a
        return 0.0 if rows == 0 else (a.draft_ms + a.draft_row_ms * self.bs * rows) / 1e3

    def step_s(self, width, rows):
        return (self.a.verify_ms + self.a.row_ms * self.bs * width) / 1e3 + self.draft_s(rows)

    def static(self, width):
        tokens = sum(cut(t, p, width)[1] for st in self.steps for t, p, _ in st)
        seconds = sum(self.step_s(max(min(width, t.n) for t, _, _ in st), width - 1) for st in self.steps)
        return tokens / seconds

    def policy(self, seed):
        pol = bp.BudgetPolicy(B, draft_depth=B - 1, seed=seed)
        tokens = seconds = 0.0
        for st in self.steps:
            w = pol.plan(self.bs, None)
            trees, budgets, paths, bonus = [], [], [], []
            for tree, path, bonus_token in st:
                b, k = cut(tree, path, w)
                trees.append(tree_prefix(tree, b))
                budgets.append(b)
                paths.append(path[:k])
                bonus.append(int(tree.tokens[path[k]]) if k < len(path) else bonus_token)
                tokens += k
            probe = pol.probe
            rows = B - 1 if probe else min(w, B) - 1
            if rows:
                pol.note_draft(self.bs, rows, self.draft_s(rows))
            s = self.step_s(max(budgets), rows)
            pol.observe(trees, budgets, paths, bonus, s, probe_trees=[r[0] for r in st] if probe else None,
                        probe_budgets=[r[0].n for r in st] if probe else None)
            seconds += s
        return tokens / seconds


def load_rounds(paths):
    """{workload: recorded rounds} from curve_replay.py's PKL files (named rec_WORKLOAD.pkl)."""
    rounds_by_name = {}
    for path in paths:
        name = path.rsplit("/", 1)[-1].removesuffix(".pkl").removeprefix("rec_")
        with open(path, "rb") as f:
            rounds_by_name[name] = [r for r in pickle.load(f) if r is not None]
    return rounds_by_name


def main():
    args = parse_args()
    rounds_by_name = load_rounds(args.rounds)
    print(f"step = {args.verify_ms} + {args.row_ms} ms x rows, head {args.draft_ms} + {args.draft_row_ms} ms x head rows;"
          f" policy tokens/s over the best static width's, mean (min) over seeds 0-{args.seeds - 1}")
    decays = [float(x) for x in args.decays.split(",")]
    for order in args.orders:
        names = order.split(",")
        for bs in (int(x) for x in args.batch_sizes.split(",")):
            sim = Sim(rounds_by_name, names, bs, args)
            static = {w: sim.static(w) for w in range(1, B + 1)}
            best_w = max(static, key=static.get)
            line = f"{order:16s} bs {bs}: best static width {best_w:2d} (width 8: {static[8] / static[best_w]:.3f})"
            for d in decays:
                bp.EMP_DECAY = d
                r = [sim.policy(s) / static[best_w] for s in range(args.seeds)]
                line += f" | decay {d:g}: {sum(r) / len(r):.3f} ({min(r):.3f})"
            print(line, flush=True)


if __name__ == "__main__":
    main()
