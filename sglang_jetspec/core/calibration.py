"""Calibrated acceptance probability of a draft-tree node, learned online from verify rounds.

Why: the budget controller (budget_controller.py) needs P(node accepted) for every candidate
node to price a larger tree. The draft's cumulative log-prob (DraftTree.scores) ranks nodes
well but is not a probability the target agrees with (the head is over- or under-confident,
and by different amounts at different depths). This module maps score (and optionally depth)
to the empirical acceptance rate, a node counting as accepted iff it lies on the accepted path.

Estimator: a linear spline over K knots evenly spaced on [score_min, 0]. Each observation is
split between its two neighbouring knots with linear weights (so predictions interpolate
smoothly instead of stepping per bin), every knot holds exponentially decayed counts (so the
map follows drift in the workload) and a Beta prior centred on exp(knot score) with
`prior_strength` pseudo-observations (so an empty knot trusts the draft until data arrives).
Knot means are then made non-decreasing in score (weighted pool-adjacent-violators): a more
probable path is never predicted to be accepted less often. Optional depth buckets keep one
spline per depth (depth_bins = 1 ignores depth).

Why greedy acceptance is a per-node property: under greedy verification (and under the
"walk" sampling rule) node v is accepted iff every token on its path equals the target's pick
at its parent, which does not depend on which other nodes are in the tree. So a node's
probability is the same in the tree of budget B and in any larger tree, expected accepted
length is 1 + the sum of the tree's node probabilities, and outcomes of nodes just beyond the
verified tree can be read off the accepted path and the bonus token (`labelled_nodes`).
Under recursive rejection sampling a node's chance also depends on its drafted siblings; the
calibrator then learns the average for trees like those it is fed (keep one calibrator per
acceptance rule).
"""

from __future__ import annotations

import math

import torch

from .isotonic import isotonic
from .tree import DraftTree

_VERSION = 1
# trees_probs takes the plain-Python path for batches of at most this many nodes
SMALL_BATCH_NODES = 256


class AcceptanceCalibrator:
    """score (+ depth) -> P(accepted), online. Call `update` ONCE per verify round (decay is per
    call), `predict`/`tree_probs` before building the next round's trees."""

    def __init__(self, score_min: float = -20.0, n_knots: int = 41, depth_bins: int = 1,
                 half_life: float | None = 200.0, prior_strength: float = 2.0, monotone: bool = True):
        if not (math.isfinite(score_min) and score_min < 0):
            raise ValueError(f"score_min {score_min} must be a finite negative log-prob")
        if n_knots < 2:
            raise ValueError(f"n_knots {n_knots} must be >= 2")
        if depth_bins < 1:
            raise ValueError(f"depth_bins {depth_bins} must be >= 1")
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life {half_life} must be > 0 rounds (None = never forget)")
        if not prior_strength > 0:
            raise ValueError(f"prior_strength {prior_strength} must be > 0 pseudo-observations")
        self.score_min, self.n_knots, self.depth_bins = float(score_min), int(n_knots), int(depth_bins)
        self.half_life, self.prior_strength, self.monotone = half_life, float(prior_strength), monotone
        self.spacing = -self.score_min / (self.n_knots - 1)
        self.decay = 1.0 if half_life is None else 0.5 ** (1.0 / half_life)
        knots = self.score_min + self.spacing * torch.arange(self.n_knots, dtype=torch.float64)
        self.prior = knots.exp().clamp(0.0, 1.0)  # [K] Beta prior mean at each knot
        shape = (self.depth_bins, self.n_knots)
        self.count = torch.zeros(shape, dtype=torch.float64)  # decayed observation weight
        self.hits = torch.zeros(shape, dtype=torch.float64)  # decayed accepted weight
        self.pred = torch.zeros(shape, dtype=torch.float64)  # decayed calibrated predictions (pre-update)
        self.draft = torch.zeros(shape, dtype=torch.float64)  # decayed raw draft predictions exp(score)
        self.updates = 0
        self._table: torch.Tensor | None = None  # [depth_bins, K] cached knot means
        self._table_list: list[float] | None = None  # the same, flattened (trees_prob_lists)

    # ---- learning ---------------------------------------------------------------------------

    def _locate(self, scores: torch.Tensor, depths: torch.Tensor | None):
        """(flat knot index of the lower neighbour [m], weight of the upper one [m])."""
        s = scores.detach().to("cpu", torch.float64).clamp(self.score_min, 0.0)
        x = (s - self.score_min) / self.spacing  # [m] in [0, K-1]
        lo = x.floor().long().clamp(0, self.n_knots - 2)
        frac = x - lo
        if self.depth_bins > 1:
            if depths is None:
                raise ValueError(f"depth_bins = {self.depth_bins} needs the nodes' depths")
            d = depths.detach().to("cpu").long()
            if d.shape != scores.shape:
                raise ValueError(f"depths shape {tuple(d.shape)} != scores shape {tuple(scores.shape)}")
            lo = lo + (d - 1).clamp(0, self.depth_bins - 1) * self.n_knots
        return lo, frac

    def update(self, scores: torch.Tensor, accepted: torch.Tensor,
               depths: torch.Tensor | None = None) -> None:
        """One verify round's labelled nodes: scores [m] float, accepted [m] bool, depths [m]."""
        if scores.dim() != 1 or accepted.shape != scores.shape:
            raise ValueError(f"scores {tuple(scores.shape)} and accepted {tuple(accepted.shape)} "
                             "must both be [m]")
        if not scores.is_floating_point() or bool(torch.isnan(scores).any()):
            raise ValueError(f"scores must be float without NaN, got dtype {scores.dtype}")
        pred = self.predict(scores, depths).to(torch.float64)  # prequential: before seeing outcomes
        lo, frac = self._locate(scores, depths)
        for buf in (self.count, self.hits, self.pred, self.draft):
            buf.mul_(self.decay)
        acc = accepted.detach().to("cpu", torch.float64)
        raw = scores.detach().to("cpu", torch.float64).exp().clamp(0.0, 1.0)
        for buf, val in ((self.count, torch.ones_like(acc)), (self.hits, acc),
                         (self.pred, pred), (self.draft, raw)):
            flat = buf.view(-1)
            flat.index_add_(0, lo, val * (1.0 - frac))
            flat.index_add_(0, lo + 1, val * frac)
        self.updates += 1
        self._table = None

    def update_from_trees(self, trees: list[DraftTree], accepted_paths: list[list[int]],
                          verified_sizes: list[int] | None = None,
                          bonus_tokens: list[int | None] | None = None) -> int:
        """`update` with the labelled nodes of a whole batch (see `labelled_nodes`); returns m."""
        sizes, bonus = round_lists(trees, accepted_paths, verified_sizes, bonus_tokens)
        if all(t.n == 1 for t in trees):  # roots alone (plain decoding) label no node
            return 0
        scores: list[float] = []
        depths: list[int] = []
        accepted: list[bool] = []
        for t, p, v, b in zip(trees, accepted_paths, sizes, bonus):
            idx, acc = _labelled_lists(t, p, v, b)
            tree_scores, tree_depths = t.scores.tolist(), t.depths.tolist()
            scores += [tree_scores[i] for i in idx]
            depths += [tree_depths[i] for i in idx]
            accepted += acc
        if scores:
            self._update_lists(scores, accepted, depths)
        return len(scores)

    def _update_lists(self, scores: list[float], accepted: list[bool], depths: list[int]) -> None:
        """`update` on Python lists, accumulated in plain Python and added to the buffers in one
        tensor op each (the tensor path is `update`; a test compares the two)."""
        if any(x != x for x in scores):
            raise ValueError("scores must be float without NaN")
        table = self._knot_list()  # prequential: predictions before seeing the outcomes
        size = self.depth_bins * self.n_knots
        count, hits, pred, draft = [0.0] * size, [0.0] * size, [0.0] * size, [0.0] * size
        for score, ok, d in zip(scores, accepted, depths):
            lo, frac = self._knot_of(score, d)
            guess = table[lo] * (1.0 - frac) + table[lo + 1] * frac
            raw = min(1.0, math.exp(score))
            for j, w in ((lo, 1.0 - frac), (lo + 1, frac)):
                count[j] += w
                if ok:
                    hits[j] += w
                pred[j] += guess * w
                draft[j] += raw * w
        for buf, delta in ((self.count, count), (self.hits, hits), (self.pred, pred), (self.draft, draft)):
            buf.mul_(self.decay)
            buf.view(-1).add_(torch.tensor(delta, dtype=torch.float64))
        self.updates += 1
        self._table = None

    # ---- prediction ---------------------------------------------------------------------------

    def _knot_means(self) -> torch.Tensor:
        """[depth_bins, K] posterior means, monotone in score if asked (cached until the next update)."""
        if self._table is None:
            s = self.prior_strength
            weight = self.count + s
            mean = (self.hits + s * self.prior) / weight
            if self.monotone:
                mean = torch.stack([_isotonic(m, w) for m, w in zip(mean, weight)])
            self._table = mean.clamp(0.0, 1.0)
            self._table_list = None
        return self._table

    def predict(self, scores: torch.Tensor, depths: torch.Tensor | None = None) -> torch.Tensor:
        """P(accepted) [m] float32 for nodes with these cumulative draft log-probs (root excluded)."""
        lo, frac = self._locate(scores, depths)
        table = self._knot_means().view(-1)
        p = table[lo] * (1.0 - frac) + table[lo + 1] * frac
        return p.to(torch.float32)

    def tree_probs(self, tree: DraftTree) -> torch.Tensor:
        """[n-1] P(accepted) of the tree's non-root nodes in node order, made consistent with the
        tree: a child never exceeds its parent, and siblings (mutually exclusive: at most one is
        on the accepted path) never sum above their parent."""
        return self.trees_probs([tree])[0]

    def trees_probs(self, trees: list[DraftTree]) -> list[torch.Tensor]:
        """tree_probs for a batch: plain Python up to SMALL_BATCH_NODES nodes in all (the width
        policy calls it every step on a few dozen nodes, where each tensor op costs more than
        the arithmetic), one tensor pass over the batch above (`_trees_probs_torch`, the
        reference the test compares it with)."""
        if sum(t.n for t in trees) <= SMALL_BATCH_NODES:
            return [torch.tensor(q, dtype=torch.float32) for q in self.trees_prob_lists(trees)]
        return self._trees_probs_torch(trees)

    def trees_prob_lists(self, trees: list[DraftTree]) -> list[list[float]]:
        """tree_probs of each tree as a Python list (float64 arithmetic; the tensor path rounds
        to float32 at each step, a difference of ~1e-7)."""
        table = self._knot_list()
        out = []
        for t in trees:
            n = t.n
            parents, depths, scores = t.parents.tolist(), t.depths.tolist(), t.scores.tolist()
            p = [1.0] * n
            levels: list[list[int]] = []
            for i in range(1, n):
                d = depths[i]
                lo, frac = self._knot_of(scores[i], d)
                p[i] = table[lo] * (1.0 - frac) + table[lo + 1] * frac
                while len(levels) < d:
                    levels.append([])
                levels[d - 1].append(i)
            for nodes in levels:  # depth by depth: each parent is final before its children
                total: dict[int, float] = {}
                for i in nodes:
                    q = parents[i]
                    p[i] = min(p[i], p[q])
                    total[q] = total.get(q, 0.0) + p[i]
                for i in nodes:
                    q = parents[i]
                    if total[q] > p[q]:
                        p[i] *= p[q] / max(total[q], 1e-30)
            out.append(p[1:])
        return out

    def _knot_of(self, score: float, depth: int) -> tuple[int, float]:
        """_locate for one node in plain Python: (flat index of the lower knot, weight of the
        upper one)."""
        k = self.n_knots
        x = (min(0.0, max(self.score_min, score)) - self.score_min) / self.spacing
        lo = min(max(int(math.floor(x)), 0), k - 2)
        frac = x - lo
        if self.depth_bins > 1:
            lo += min(max(depth - 1, 0), self.depth_bins - 1) * k
        return lo, frac

    def _knot_list(self) -> list[float]:
        """_knot_means flattened to a Python list (cached with it)."""
        table = self._knot_means()
        if self._table_list is None:
            self._table_list = table.view(-1).tolist()
        return self._table_list

    def _trees_probs_torch(self, trees: list[DraftTree]) -> list[torch.Tensor]:
        """trees_probs in one tensor pass (one predict, one loop over depth levels)."""
        sizes = [t.n for t in trees]
        if not trees:
            return []
        offsets = torch.tensor([0] + sizes[:-1]).cumsum(0).repeat_interleave(torch.tensor(sizes))
        parents = torch.cat([t.parents.cpu().long() for t in trees]) + offsets  # [N] global ids
        depths = torch.cat([t.depths.cpu().long() for t in trees])  # [N]
        scores = torch.cat([t.scores.cpu() for t in trees])  # [N]
        n = int(depths.numel())
        p = torch.ones(n, dtype=torch.float32)  # [N], roots accepted always
        live = depths > 0
        p[live] = self.predict(scores[live], depths[live])
        for d in range(1, int(depths.max()) + 1):
            nodes = (depths == d).nonzero().squeeze(1)  # [k]
            par = parents[nodes]
            p[nodes] = torch.minimum(p[nodes], p[par])
            total = torch.zeros(n).index_add_(0, par, p[nodes])  # [N] children sum per parent
            scale = torch.where(total > p, p / total.clamp_min(1e-30), torch.ones(n))
            p[nodes] = p[nodes] * scale[par]
        return [q[1:] for q in p.split(sizes)]

    # ---- health ------------------------------------------------------------------------------

    def expected_error(self, of: str = "calibrated") -> float:
        """Expected calibration error over recent (decayed) data: sum over knots of
        |accepted - predicted| weight / total weight. `of="calibrated"` scores this calibrator's
        own predictions made BEFORE each update saw its outcomes (honest, prequential);
        `of="draft"` scores the raw exp(score). NaN before any data."""
        if of not in ("calibrated", "draft"):
            raise ValueError(f"of = {of!r} must be 'calibrated' or 'draft'")
        total = float(self.count.sum())
        if total <= 0:
            return float("nan")
        pred = self.pred if of == "calibrated" else self.draft
        return float((self.hits - pred).abs().sum()) / total

    def state_dict(self) -> dict:
        """Plain JSON-able state (config + decayed counts), for logging or saving."""
        return {"version": _VERSION, "updates": self.updates,
                "config": {"score_min": self.score_min, "n_knots": self.n_knots,
                           "depth_bins": self.depth_bins, "half_life": self.half_life,
                           "prior_strength": self.prior_strength, "monotone": self.monotone},
                **{k: getattr(self, k).tolist() for k in ("count", "hits", "pred", "draft")}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != _VERSION:
            raise ValueError(f"calibrator state version {state.get('version')} != {_VERSION}")
        mine = self.state_dict()["config"]
        if state["config"] != mine:
            raise ValueError(f"calibrator config {state['config']} does not match this one {mine}")
        for k in ("count", "hits", "pred", "draft"):
            t = torch.tensor(state[k], dtype=torch.float64)
            if t.shape != self.count.shape:
                raise ValueError(f"state[{k!r}] shape {tuple(t.shape)} != {tuple(self.count.shape)}")
            setattr(self, k, t)
        self.updates = int(state["updates"])
        self._table = None

    @classmethod
    def from_state_dict(cls, state: dict) -> "AcceptanceCalibrator":
        cal = cls(**state["config"])
        cal.load_state_dict(state)
        return cal


def _isotonic(y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted least-squares non-decreasing fit of y [K] (pool adjacent violators)."""
    return torch.tensor(isotonic(y.tolist(), w.tolist()), dtype=y.dtype)


def round_lists(trees: list[DraftTree], accepted_paths: list[list[int]], verified_sizes: list[int] | None,
                bonus_tokens: list[int | None] | None) -> tuple[list, list]:
    """A verify round's per-tree verified sizes and bonus tokens (None each when not given),
    checked to have one entry per tree, as are the accepted paths."""
    if len(accepted_paths) != len(trees):
        raise ValueError(f"{len(accepted_paths)} accepted paths for {len(trees)} trees")
    sizes = verified_sizes or [None] * len(trees)
    bonus = bonus_tokens or [None] * len(trees)
    if len(sizes) != len(trees) or len(bonus) != len(trees):
        raise ValueError(f"verified_sizes ({len(sizes)}) and bonus_tokens ({len(bonus)}) "
                         f"must have one entry per tree ({len(trees)})")
    return sizes, bonus


def labelled_nodes(tree: DraftTree, accepted_nodes: list[int], verified_n: int | None = None,
                   bonus_token: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(node indices [m] long, accepted [m] bool) of the non-root nodes whose outcome is known.

    accepted_nodes: the accepted path as tree indices, root 0 first (AcceptResult.accepted_nodes;
    in the worker: accept_index[b, :accept_lens[b]] - b * n). verified_n: the round verified only
    the first verified_n nodes of `tree` (a best-first prefix; default: all of it). Those are all
    labelled. With bonus_token (greedy or walk rule only, see the module docstring) every node
    beyond the prefix whose PARENT was verified is labelled too: accepted iff its parent ends the
    accepted path and its token is the bonus. That set depends only on the tree's shape, not on
    the outcome, so it adds unbiased data just past the current width, which is what a controller
    deciding whether to grow the tree needs.
    """
    idx, acc = _labelled_lists(tree, accepted_nodes, verified_n, bonus_token)
    return torch.tensor(idx, dtype=torch.long), torch.tensor(acc, dtype=torch.bool)


def _labelled_lists(tree: DraftTree, accepted_nodes: list[int], verified_n: int | None = None,
                    bonus_token: int | None = None) -> tuple[list[int], list[bool]]:
    """labelled_nodes as Python lists (what the calibrator's per-step update reads)."""
    n = tree.n
    v = n if verified_n is None else int(verified_n)
    if not 1 <= v <= n:
        raise ValueError(f"verified_n {verified_n} must be in [1, {n}] for a tree of {n} nodes")
    path = list(accepted_nodes)
    if not path or path[0] != 0 or any(not 0 <= i < v for i in path):
        raise ValueError(f"accepted path {path} must start at the root 0 and stay in [0, {v})")
    on_path = set(path)
    idx = list(range(1, v))
    acc = [i in on_path for i in idx]
    if bonus_token is not None and v < n:
        parents, tokens, end, bonus = tree.parents.tolist(), tree.tokens.tolist(), path[-1], int(bonus_token)
        for j in range(v, n):
            if parents[j] < v:
                idx.append(j)
                acc.append(parents[j] == end and tokens[j] == bonus)
    return idx, acc


def node_outcomes(tree: DraftTree, accepted_nodes: list[int], verified_n: int | None = None,
                  bonus_token: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [m] float, accepted [m] bool) of one tree's labelled nodes, ready for `update`
    (depths, when the calibrator uses them: tree.depths[labelled_nodes(...)[0]])."""
    idx, acc = labelled_nodes(tree, accepted_nodes, verified_n, bonus_token)
    return tree.scores.cpu()[idx], acc
