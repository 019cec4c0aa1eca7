"""Would a conditional acceptance model predict the tree's nodes better than the score calibrator?

    python docs/bench/cpu-qwen3moe-prior-auto/scripts/conditional_replay.py build/rec_code.pkl ...

The recordings are curve_replay.py's (the MoE target, its head and prior, budget-16 trees, every
node verified). Each model predicts every node's P(accepted) BEFORE it learns from that round
(prequential), on rounds 21 onwards; printed: log loss, Brier score, and the predicted against
the true accepted draft nodes per round, overall and per best-first rank.

  calibrator      core/calibration.py as the server runs it: the node's cumulative (prior-rescored)
                  draft score -> P(accepted), made consistent with the tree
  calibrator-d4   the same with one spline per depth (1, 2, 3, 4+)
  conditional     q(v) = P(v accepted | its parent accepted) from the node's own score step
                  c = score(v) - score(parent) (a spline, Beta prior exp(c), monotone in c) and its
                  rank among its siblings (0, 1, 2+), learned from every child of every accepted
                  node; P(v) = P(parent) q(v), siblings scaled to sum at most 1 (at most one of them
                  is on the accepted path)
  conditional+d   the same with depth buckets (1, 2, 3, 4+) as well
  in-sample       `conditional` fitted on ALL rounds first, no prior (the best this form can do)
"""
import math
import pickle
import sys

from sglang_jetspec.core.calibration import AcceptanceCalibrator
from sglang_jetspec.core.isotonic import isotonic

SKIP, B = 20, 16


class Conditional:
    def __init__(self, cmin=-12.0, knots=25, depth_bins=1, rank_bins=3, prior=2.0, half_life=200.0, frozen=False):
        self.cmin, self.k, self.db, self.rb, self.ps = cmin, knots, depth_bins, rank_bins, prior
        self.spacing = -cmin / (knots - 1)
        self.decay = 0.5 ** (1 / half_life)
        self.prior = [math.exp(cmin + self.spacing * i) for i in range(knots)]
        self.count = [0.0] * (self.db * self.rb * knots)
        self.hits = list(self.count)
        self.table, self.frozen = None, frozen

    def _at(self, c, depth, rank):
        x = (min(0.0, max(self.cmin, c)) - self.cmin) / self.spacing
        lo = min(max(int(math.floor(x)), 0), self.k - 2)
        group = min(depth - 1, self.db - 1) * self.rb + min(rank, self.rb - 1)
        return group * self.k + lo, x - lo

    def _table(self):
        if self.table is None:
            self.table = []
            for g in range(self.db * self.rb):
                sl = slice(g * self.k, (g + 1) * self.k)
                w = [c + self.ps for c in self.count[sl]]
                y = [(h + self.ps * p) / wi for h, p, wi in zip(self.hits[sl], self.prior, w)]
                self.table += isotonic(y, w)
        return self.table

    def probs(self, tree):
        par, dep, sc, rk = (t.tolist() for t in (tree.parents, tree.depths, tree.scores, tree.ranks))
        table, q, total = self._table(), [1.0] * tree.n, {}
        for i in range(1, tree.n):
            j, f = self._at(sc[i] - sc[par[i]], dep[i], rk[i])
            q[i] = table[j] * (1 - f) + table[j + 1] * f
            total[par[i]] = total.get(par[i], 0.0) + q[i]
        p = [1.0] * tree.n
        for i in range(1, tree.n):
            p[i] = p[par[i]] * q[i] / max(1.0, total[par[i]])
        return p[1:]

    def learn(self, tree, path):
        if self.frozen:
            return
        self.count = [x * self.decay for x in self.count]
        self.hits = [x * self.decay for x in self.hits]
        par, dep, sc, rk = (t.tolist() for t in (tree.parents, tree.depths, tree.scores, tree.ranks))
        on = set(path)
        for i in range(1, tree.n):
            if par[i] in on:  # its parent was accepted: whether it was is known and unbiased
                j, f = self._at(sc[i] - sc[par[i]], dep[i], rk[i])
                for jj, w in ((j, 1 - f), (j + 1, f)):
                    self.count[jj] += w
                    self.hits[jj] += w if i in on else 0.0
        self.table = None


def evaluate(rounds, name, predict, learn):
    loss = brier = 0.0
    m = 0
    pred, true, seen = [0.0] * (B - 1), [0.0] * (B - 1), 0
    for r, (tree, path, bonus) in enumerate(rounds):
        p = predict(tree)
        if r >= SKIP and tree.n == B:
            seen += 1
            on = set(path)
            for i in range(1, tree.n):
                y, q = float(i in on), min(max(p[i - 1], 1e-4), 1 - 1e-4)
                loss -= y * math.log(q) + (1 - y) * math.log(1 - q)
                brier += (y - q) ** 2
                m += 1
                pred[i - 1] += p[i - 1]
                true[i - 1] += y
        learn(tree, path, bonus)
    print(f"{name:14s} log loss {loss / m:.3f}  Brier {brier / m:.3f}  accepted draft nodes per round: "
          f"predicted {sum(pred) / seen:.2f}, true {sum(true) / seen:.2f}")
    print(f"{'':14s} per rank (predicted/true): " + " ".join(f"{a / seen:.2f}/{b / seen:.2f}" for a, b in zip(pred, true)))


def calibrator(**kw):
    cal = AcceptanceCalibrator(**kw)
    return (lambda t: cal.trees_prob_lists([t])[0],
            lambda t, path, bonus: cal.update_from_trees([t], [path], [t.n], [bonus]))


def conditional(model):
    return model.probs, lambda t, path, bonus: model.learn(t, path)


def main():
    for f in sys.argv[1:]:
        with open(f, "rb") as fh:
            rounds = pickle.load(fh)
        print(f"== {f}: {len(rounds)} rounds, scored from round {SKIP + 1} (full 16-node trees only)")
        evaluate(rounds, "calibrator", *calibrator())
        evaluate(rounds, "calibrator-d4", *calibrator(depth_bins=4))
        evaluate(rounds, "conditional", *conditional(Conditional()))
        evaluate(rounds, "conditional+d", *conditional(Conditional(depth_bins=4)))
        fitted = Conditional(prior=0.01, half_life=1e12)
        for tree, path, _ in rounds:
            fitted.learn(tree, path)
        fitted.frozen = True
        evaluate(rounds, "in-sample", *conditional(fitted))


if __name__ == "__main__":
    main()
