"""Node acceptance probabilities from a CONDITIONAL model: P(child accepted | parent accepted).

Why: the expert-aware scheduler (expert_aware_tree.py) keeps the nodes whose expected accepted
tokens are worth the experts they bring, so it needs each node's own chance, not just a good
ranking. The score calibrator (calibration.py) maps a node's cumulative path score to P(accepted);
with the n-gram prior many scores saturate at 0 (the rescored step is capped at 0), and a
saturated rank-0 child and its saturated rank-1 sibling then look alike although the first is
accepted ~90% of the time and the second ~10-30% (measured on the MoE target's recordings,
docs/sglang-integration.md next step 4). This model reads what the tree knows about each step:

    q(v) = P(v accepted | parent(v) accepted) = f(rank of v among its siblings, score step of v)

with the score step c = score(v) - score(parent) (the draft's conditional log-prob, prior bonus
included), one spline over c per rank bucket (0, 1, 2+; optionally per depth bucket too),
exponentially decayed counts, a Beta prior centred on exp(c), and knot means made non-decreasing
in c. Then P(v) = P(parent) * q(v) / max(1, sum of q over v and its siblings) (at most one
sibling is on the accepted path).

Learning is unbiased at any width: once a node is accepted, the target's pick after it is known,
so every child of every accepted node is labelled (accepted iff its token is the pick), including
children beyond the verified prefix when the bonus token is given (calibration.labelled_nodes).

Levels per depth: acceptances along a path are correlated beyond the parent's (easy stretches
accept everything), so the products under-predict deep nodes, by 20-27% of the accepted nodes even
fitted on all the rounds at once (docs/bench/cpu-qwen3moe-prior-auto/conditional_replay.txt). Each
depth keeps decayed sums of its labelled nodes' acceptances and of the products' predictions for
them; a node's probability is its product times their ratio (`levels`), kept at most its parent's,
siblings scaled to sum at most it (on the 64-expert target's trace: 0.74 -> 0.87 of the accepted
nodes predicted).

Measured: node log loss 0.50 -> 0.45 (code), 0.62 -> 0.45 (math), 0.43 -> 0.41 (chat) against the
score calibrator on the 8-expert target's recordings (without the levels); in exact expert replays
more experts pruned at the same accepted-length loss (docs/bench/cpu-qwen3moe-acceptance/).

The n-gram split (`logp_bins=NGRAM_BINS`, the server's model when the head has an n-gram prior):
each group is split by the node's probability under the prior's counts of the target's own
answers, log P(token | grandparent, parent) (`pair_prior.PairPrior.node_logprobs`, uncapped,
unlike the score step). A node the target's answers always continue that way is accepted far more
often than its capped score says. In exact replays of five recorded traces (two targets, budgets
8-128) it lowered the node log loss everywhere (e.g. 0.326 -> 0.285) and cut more experts at the
same accepted length (64 experts, budgets 64-128: -14.0% -> -18.6% of the distinct experts at -3%
accepted length; docs/bench/cpu-qwen3moe-acceptance/ngram_split.txt). The node's own draft
log-prob as the split gave no such gain (logp_features.txt there).

Interface as AcceptanceCalibrator's (`update_from_trees`, `trees_probs`, `tree_probs`): call
`update_from_trees` once per verify round. Plain Python over the nodes (trees are small; a batch
of 32 budget-32 trees is ~1000 nodes).
"""

from __future__ import annotations

import math

import torch

from .calibration import _labelled_lists, round_lists
from .isotonic import isotonic
from .tree import DraftTree

# from this many nodes in a round, the tensor pass over the batch beats the per-node Python
# (docs/bench/cpu-qwen3moe-acceptance/schedule_cost_batched.txt: ~1 ms slower at batch 1, level
# around 256-512 nodes, 1.7x faster at 32 budget-32 trees)
BATCH_MIN_NODES = 512
# thresholds of the n-gram split (module docstring): chosen on one 64-expert trace among five
# splits, the best or level with the best on the four other traces
NGRAM_BINS = (-0.1, -0.5, -1.5, -3.0)


class ConditionalAcceptance:
    """q(rank, depth, score step) -> P(accepted | parent accepted), online; node probabilities as
    products along the path."""

    def __init__(self, step_min: float = -12.0, n_knots: int = 25, rank_bins: int = 3, depth_bins: int = 1,
                 half_life: float | None = 200.0, prior_strength: float = 2.0, monotone: bool = True,
                 depth_levels: bool = True, max_depth: int = 16, logp_bins: tuple[float, ...] = ()):
        if not (math.isfinite(step_min) and step_min < 0):
            raise ValueError(f"step_min {step_min} must be a finite negative log-prob")
        if n_knots < 2:
            raise ValueError(f"n_knots {n_knots} must be >= 2")
        if rank_bins < 1 or depth_bins < 1:
            raise ValueError(f"rank_bins {rank_bins} and depth_bins {depth_bins} must be >= 1")
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life {half_life} must be > 0 rounds (None = never forget)")
        if not prior_strength > 0:
            raise ValueError(f"prior_strength {prior_strength} must be > 0 pseudo-observations")
        if list(logp_bins) != sorted(logp_bins, reverse=True) or any(not x <= 0 for x in logp_bins):
            raise ValueError(f"logp_bins {logp_bins} must be log-probs <= 0 in descending order")
        # a per-node log-prob feature splits the groups at these thresholds (the server's: the
        # n-gram prior's log P(token | its two predecessors), NGRAM_BINS; studied: the node's own
        # draft log-prob before the prior's rescoring); updates and predictions then need `node_logps`
        self.logp_bins = tuple(float(x) for x in logp_bins)
        self.step_min, self.n_knots = float(step_min), int(n_knots)
        self.rank_bins, self.depth_bins = int(rank_bins), int(depth_bins)
        self.half_life, self.prior_strength, self.monotone = half_life, float(prior_strength), monotone
        self.spacing = -self.step_min / (self.n_knots - 1)
        self.decay = 1.0 if half_life is None else 0.5 ** (1.0 / half_life)
        self.prior = [min(1.0, math.exp(self.step_min + self.spacing * i)) for i in range(self.n_knots)]
        self.groups = self.rank_bins * self.depth_bins * (len(self.logp_bins) + 1)
        size = self.groups * self.n_knots
        self.count = [0.0] * size  # decayed observation weight per knot
        self.hits = [0.0] * size  # decayed accepted weight per knot
        self.updates = 0
        self._table: list[float] | None = None
        # per depth: decayed accepted nodes and the path products' predictions for them
        self.depth_levels, self.max_depth = depth_levels, int(max_depth)
        self.level_hits = [0.0] * (self.max_depth + 1)
        self.level_pred = [0.0] * (self.max_depth + 1)

    def _knot_of(self, step: float, depth: int, rank: int, logp: float = 0.0) -> tuple[int, float]:
        """(flat index of the lower knot, weight of the upper one) of a node."""
        x = (min(0.0, max(self.step_min, step)) - self.step_min) / self.spacing
        lo = min(max(int(math.floor(x)), 0), self.n_knots - 2)
        group = min(max(depth - 1, 0), self.depth_bins - 1) * self.rank_bins + min(rank, self.rank_bins - 1)
        if self.logp_bins:
            group = group * (len(self.logp_bins) + 1) + sum(logp < b for b in self.logp_bins)
        return group * self.n_knots + lo, x - lo

    def _own(self, tree: DraftTree, logps) -> list[float]:
        """The nodes' log-prob feature as a list (zeros when the model does not use one)."""
        if not self.logp_bins:
            return [0.0] * tree.n
        if logps is None:
            raise ValueError("this model splits on a per-node log-prob (logp_bins "
                             f"{self.logp_bins}): pass node_logps")
        if logps.shape[0] != tree.n:
            raise ValueError(f"node_logps has {logps.shape[0]} entries for a tree of {tree.n} nodes")
        return logps.tolist()

    def _knots(self) -> list[float]:
        """Posterior knot means, monotone in the score step within each group (cached)."""
        if self._table is None:
            k, s, out = self.n_knots, self.prior_strength, []
            for g in range(self.groups):
                counts, hits = self.count[g * k:(g + 1) * k], self.hits[g * k:(g + 1) * k]
                weight = [c + s for c in counts]
                mean = [(h + s * p) / w for h, p, w in zip(hits, self.prior, weight)]
                out += isotonic(mean, weight) if self.monotone else mean
            self._table = [min(1.0, max(0.0, m)) for m in out]
        return self._table

    # ---- learning ---------------------------------------------------------------------------

    def update_from_trees(self, trees: list[DraftTree], accepted_paths: list[list[int]],
                          verified_sizes: list[int] | None = None,
                          bonus_tokens: list[int | None] | None = None,
                          node_logps: list[torch.Tensor] | None = None) -> int:
        """One verify round: every labelled child of an accepted node (see
        calibration.labelled_nodes for verified_sizes and bonus_tokens); returns how many.
        node_logps: per tree [n] the nodes' log-prob feature (needed with logp_bins)."""
        sizes, bonus = round_lists(trees, accepted_paths, verified_sizes, bonus_tokens)
        logps = node_logps if node_logps is not None else [None] * len(trees)
        seen: list[tuple[int, float, bool]] = []
        levels: list[tuple[int, float, bool]] = []  # (depth, path product predicted, accepted)
        products = self._products(trees, None, node_logps) if self.depth_levels else [None] * len(trees)
        for t, path, v, b, lp, prod in zip(trees, accepted_paths, sizes, bonus, logps, products):
            if t.n == 1:
                continue
            own = self._own(t, lp)
            idx, acc = _labelled_lists(t, path, v, b)
            on_path = set(path)
            parents, depths, scores, ranks = (x.tolist() for x in (t.parents, t.depths, t.scores, t.ranks))
            raw = [1.0] + prod.tolist() if prod is not None else None
            for i, ok in zip(idx, acc):
                p = parents[i]
                if raw is not None:
                    levels.append((min(depths[i], self.max_depth), raw[i], ok))
                if p in on_path:  # its parent was accepted: the target's pick after it is known
                    j, f = self._knot_of(scores[i] - scores[p], depths[i], ranks[i], own[i])
                    seen.append((j, f, ok))
        if not seen and all(t.n == 1 for t in trees):
            return 0
        if self.decay != 1.0:
            self.count = [c * self.decay for c in self.count]
            self.hits = [h * self.decay for h in self.hits]
            self.level_hits = [h * self.decay for h in self.level_hits]
            self.level_pred = [h * self.decay for h in self.level_pred]
        for d, q, ok in levels:
            self.level_pred[d] += q
            if ok:
                self.level_hits[d] += 1.0
        for j, f, ok in seen:
            self.count[j] += 1.0 - f
            self.count[j + 1] += f
            if ok:
                self.hits[j] += 1.0 - f
                self.hits[j + 1] += f
        self.updates += 1
        self._table = None
        return len(seen)

    # ---- prediction -------------------------------------------------------------------------

    def step_probs(self, tree: DraftTree, node_logps: torch.Tensor | None = None) -> list[float]:
        """[n - 1] q(v) of the non-root nodes: P(accepted | parent accepted), before the sibling
        scaling."""
        table, own = self._knots(), self._own(tree, node_logps)
        parents, depths, scores, ranks = (x.tolist() for x in (tree.parents, tree.depths, tree.scores, tree.ranks))
        out = []
        for i in range(1, tree.n):
            j, f = self._knot_of(scores[i] - scores[parents[i]], depths[i], ranks[i], own[i])
            out.append(table[j] * (1.0 - f) + table[j + 1] * f)
        return out

    def _path_products(self, tree: DraftTree, levels: list[float] | None = None,
                       node_logps: torch.Tensor | None = None) -> list[float]:
        """[n - 1] P(parent) q(v) / max(1, q of v and its siblings), each node's P(parent) taken
        from the same pass; with `levels` every node's value is scaled by its depth's level and
        kept at most its parent's (siblings scaled to sum at most their parent's)."""
        n = tree.n
        if n == 1:
            return []
        q = [1.0] + self.step_probs(tree, node_logps)
        parents, depths = tree.parents.tolist(), tree.depths.tolist()
        total = [0.0] * n
        for i in range(1, n):
            total[parents[i]] += q[i]
        p = [1.0] * n
        for i in range(1, n):  # topological order: the parent is final first
            par = parents[i]
            p[i] = p[par] * q[i] / max(1.0, total[par])
        if levels is None:
            return p[1:]
        out = [1.0] * n
        for node, kids in enumerate(tree.children()):  # topological: a node is final before its children
            if not kids:
                continue
            vals = [min(out[node], p[k] * levels[min(depths[k], self.max_depth)]) for k in kids]
            total = sum(vals)
            scale = out[node] / total if total > out[node] else 1.0  # at most one sibling is accepted
            for k, v in zip(kids, vals):
                out[k] = v * scale
        return out[1:]

    def levels(self) -> list[float]:
        """Per depth: accepted nodes / the path products' prediction for them (decayed, with
        `prior_strength` pseudo-observations at 1), the factor the products are scaled by."""
        s = self.prior_strength
        return [(h + s) / (q + s) for h, q in zip(self.level_hits, self.level_pred)]

    def tree_prob_list(self, tree: DraftTree, node_logps: torch.Tensor | None = None) -> list[float]:
        """[n - 1] P(accepted) of the non-root nodes in node order (a list of floats)."""
        return self._path_products(tree, self.levels() if self.depth_levels else None, node_logps)

    def tree_probs(self, tree: DraftTree, node_logps: torch.Tensor | None = None) -> torch.Tensor:
        """[n - 1] float32 P(accepted) of the non-root nodes: a child never above its parent,
        siblings never summing above it."""
        return torch.tensor(self.tree_prob_list(tree, node_logps), dtype=torch.float32)

    def trees_probs(self, trees: list[DraftTree], node_logps: list[torch.Tensor] | None = None
                    ) -> list[torch.Tensor]:
        """[tree_probs(t) for each tree] (`_products`)."""
        levels = self.levels() if self.depth_levels else None
        return [p.float() for p in self._products(trees, levels, node_logps)]

    def _products(self, trees: list[DraftTree], levels: list[float] | None,
                  node_logps: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """float64 `_path_products` of every tree: for a round of BATCH_MIN_NODES nodes or more
        computed at once (`batch_products`), below that per node in Python, which is faster there."""
        if sum(t.n for t in trees) >= BATCH_MIN_NODES:
            return self.batch_products(trees, levels, node_logps)
        logps = node_logps if node_logps is not None else [None] * len(trees)
        return [torch.tensor(self._path_products(t, levels, lp), dtype=torch.float64)
                for t, lp in zip(trees, logps)]

    def batch_products(self, trees: list[DraftTree], levels: list[float] | None = None,
                       node_logps: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """`_path_products` of every tree (float64 [n_b - 1] each) in tensor operations over the
        batch's nodes, one pass per depth instead of Python per node (the same arithmetic; sums
        over siblings may differ in the last bits: tests/test_conditional_acceptance.py)."""
        if not trees:
            return []
        logps = node_logps if node_logps is not None else [None] * len(trees)
        sizes = [t.n for t in trees]
        offsets = torch.tensor([0] + sizes[:-1]).cumsum(0)
        parents = torch.cat([t.parents.cpu().long() + torch.where(t.parents.cpu() >= 0, o, 0)
                             for t, o in zip(trees, offsets.tolist())])
        depths = torch.cat([t.depths.cpu().long() for t in trees])
        scores = torch.cat([t.scores.cpu().double() for t in trees])
        ranks = torch.cat([t.ranks.cpu().long() for t in trees])
        own = torch.tensor([x for t, lp in zip(trees, logps) for x in self._own(t, lp)], dtype=torch.float64)
        root = parents < 0
        par = parents.clamp_min(0)
        # q(v) of every node (roots 1), as _knot_of + the linear interpolation of step_probs
        step = torch.where(root, 0.0, scores - scores[par])
        x = (step.clamp(self.step_min, 0.0) - self.step_min) / self.spacing
        lo = x.floor().long().clamp(0, self.n_knots - 2)
        f = x - lo
        group = (depths - 1).clamp(0, self.depth_bins - 1) * self.rank_bins + ranks.clamp(max=self.rank_bins - 1)
        if self.logp_bins:
            group = group * (len(self.logp_bins) + 1) + sum((own < b).long() for b in self.logp_bins)
        j = group * self.n_knots + lo
        table = torch.tensor(self._knots(), dtype=torch.float64)
        q = torch.where(root, 1.0, table[j.clamp(0, table.numel() - 2)] * (1.0 - f)
                        + table[(j + 1).clamp(0, table.numel() - 1)] * f)
        child = ~root
        total = torch.zeros_like(q).index_add_(0, parents[child], q[child])  # q summed over each node's children
        p = torch.ones_like(q)
        out = torch.ones_like(q) if levels is not None else None
        if levels is not None:
            lev = torch.tensor(levels, dtype=torch.float64)
        for d in range(1, int(depths.max()) + 1):
            at = (depths == d).nonzero().squeeze(1)
            if at.numel() == 0:
                continue
            pa = parents[at]
            p[at] = p[pa] * q[at] / total[pa].clamp_min(1.0)
            if levels is not None:
                vals = torch.minimum(out[pa], p[at] * lev[depths[at].clamp(max=self.max_depth)])
                sums = torch.zeros_like(q).index_add_(0, pa, vals)[pa]
                scale = torch.where(sums > out[pa], out[pa] / sums, 1.0)
                out[at] = vals * scale
        res = out if levels is not None else p
        return [r[1:] for r in res.split(sizes)]
