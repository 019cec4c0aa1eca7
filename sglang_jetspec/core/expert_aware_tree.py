"""Expert-aware tree scheduling: which candidate nodes to verify on a Mixture-of-Experts target.

Why: on an MoE target a verify forward pays per distinct expert its tokens activate
(`moe_cost`), so the best-first tree of budget B can cost several decode steps while its deep,
unlikely nodes add little expected acceptance. Given, per candidate node, its acceptance
probability (`calibration.AcceptanceCalibrator.trees_probs`) and its predicted experts
(`expert_predictor.ExpertPredictor.predict_tree`), keep the ANCESTOR-CLOSED subset of nodes
(root always; a node only with its parent) that maximises

    expected committed tokens / predicted verify seconds
    = sum_b (1 + sum_{kept non-root v of tree b} p_v) / (a + b*tokens + c*sum_l distinct_l + d*sum_l maxrank_l)

over the whole batch, which is verified in ONE forward, so the expert union is the batch's.

Lossless by construction: the scheduler only drops candidate nodes. Every kept node keeps its token
and its path (its ancestors are all kept), and the pruned tree is an ordinary draft tree. Greedy
verification and the sampling "walk" rule commit target picks whatever the tree is, so any pruning
is lossless for them; a node's acceptance there does not depend on the other nodes, so the
expected length is 1 + sum of kept probabilities. Recursive rejection sampling (RRS) is different:
its sibling tokens must be draws from the draft distribution, so the SHAPE must be fixed before the
tokens are drawn (`tree.resample_children`). Schedule the deterministic best-first (top-W) tree,
then resample the pruned tree; never prune a tree whose tokens were already sampled (the kept set
would then depend on the drawn tokens and bias RRS). Under RRS dropping a sibling also changes the
others' chances, so the objective is an approximation there; the output stays exact.

Stopping: the greedy's best prefix is the one with the best ratio, optionally above a floor of
expected tokens (`max_expected_loss`), or, with a `price` in expected tokens per second, the one
with the most expected tokens - price x seconds (a price shared by rounds spends an accepted-length
loss where it saves the most verify time; core/held_price.py sets it in the server).

Greedy: start from the roots; repeatedly add the frontier node (parent kept, itself not) with
the best marginal ratio p_v / marginal cost, where the marginal cost counts only the experts the
node NEWLY brings into the batch union (and, under EP, how much it raises the most loaded rank of
each layer), plus its token row. Keep going past a dip (a costly node may open cheap children) for
up to `patience` steps and return the best prefix of the addition order. `exhaustive_schedule`
enumerates every ancestor-closed subset (tiny trees only) as the reference.

Token rows: SGLang's verify pads every request to the widest tree (`verify_layout`), so with
`pad_to_widest` the row cost is bs * max width and a node that does not widen the widest tree costs
no row. Dead padding rows repeat the root's token, so they route about like the root, whose experts
are already counted; their expert cost is ignored.

Costs come from a linear model's `coefficients` {a, b, c, d} (`moe_cost.MoeVerifyCostModel`);
"maxrank" is the number of distinct experts on the most loaded EP rank (weight reads), so d > 0
needs expert_to_rank. Runs on the host (the trees are small); one step is a few vectorised ops
over the current frontier.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from . import expert_load as el
from .tree import DraftTree


@dataclass
class TreeSchedule:
    """The pruned batch. trees[b] is a valid DraftTree (topological, root first, parents and sibling
    ranks re-indexed); kept[b] [n'_b] long are its nodes' indices in the candidate tree, ascending,
    kept[b][0] == 0 (use it to slice predicted experts or probabilities)."""

    trees: list[DraftTree]
    kept: list[torch.Tensor]
    expected_tokens: float  # sum over trees of 1 + sum of kept node probabilities
    seconds: float  # predicted verify seconds of the kept nodes (predicted experts)
    full_expected: float | None = None  # the same of the whole candidate trees (scheduled with a price)
    full_seconds: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.expected_tokens / self.seconds if self.seconds > 0 else float("inf")


def prune_tree(tree: DraftTree, keep: torch.Tensor) -> DraftTree:
    """The sub-tree of the kept nodes (keep: [n] bool mask, or node indices), with parents and
    sibling ranks re-indexed. The kept set must contain the root and be ancestor-closed."""
    n = tree.n
    mask = _keep_mask(keep, n)
    parents = tree.parents.cpu().long()
    if not bool(mask[0]):
        raise ValueError("the root (node 0) must be kept")
    orphan = mask[1:] & ~mask[parents[1:]]
    if bool(orphan.any()):
        i = int(orphan.nonzero()[0]) + 1
        raise ValueError(f"node {i} is kept but its parent {int(parents[i])} is not (not ancestor-closed)")
    kept = mask.nonzero().squeeze(1)  # [m] ascending: parents stay before children
    new_index = torch.cumsum(mask.long(), 0) - 1  # [n] old -> new (valid where kept)
    par = parents[kept]
    new_par = torch.where(par >= 0, new_index[par.clamp_min(0)], par)
    # rank among KEPT siblings: how many kept siblings rank before it
    ranks = tree.ranks.cpu().long()[kept]
    same = (new_par[:, None] == new_par[None, :]) & (ranks[None, :] < ranks[:, None])  # [m, m]
    new_ranks = torch.where(new_par >= 0, same.sum(1), torch.zeros_like(ranks))
    device = tree.tokens.device
    return DraftTree(
        tokens=tree.tokens[kept.to(device)],
        parents=new_par.to(device),
        depths=tree.depths[kept.to(device)],
        scores=tree.scores[kept.to(tree.scores.device)],
        ranks=new_ranks.to(device),
    )


def _keep_mask(keep: torch.Tensor, n: int) -> torch.Tensor:
    keep = keep.detach().cpu()
    if keep.dtype == torch.bool:
        if tuple(keep.shape) != (n,):
            raise ValueError(f"keep mask shape {tuple(keep.shape)} must be [n = {n}]")
        return keep.clone()
    idx = keep.long().reshape(-1)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"keep indices must be in [0, {n}), got {idx.tolist()}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return mask


# ---- inputs and the objective -------------------------------------------------------------------


@dataclass
class _Batch:
    """The candidate trees flattened into one node list (global ids)."""

    parents: torch.Tensor  # [N] long, global parent id, -1 for roots
    probs: torch.Tensor  # [N] float64, roots 0 (their token is committed anyway)
    experts: torch.Tensor  # [N, L, K] long, -1 = none
    tree_of: torch.Tensor  # [N] long
    offsets: list[int]
    sizes: list[int]
    num_experts: int


def _flatten(trees, probs, experts, expert_to_rank) -> _Batch:
    if not trees:
        raise ValueError("need at least one tree")
    if len(probs) != len(trees) or len(experts) != len(trees):
        raise ValueError(f"{len(probs)} prob vectors and {len(experts)} expert tensors for {len(trees)} trees")
    shape = None
    for b, (t, p, e) in enumerate(zip(trees, probs, experts)):
        if tuple(p.shape) != (t.n - 1,):
            raise ValueError(f"probs[{b}] shape {tuple(p.shape)} must be [n - 1 = {t.n - 1}] (root excluded)")
        if e.dim() != 3 or e.shape[0] != t.n:
            raise ValueError(f"experts[{b}] shape {tuple(e.shape)} must be [n = {t.n}, L, K] (root included)")
        if shape is not None and tuple(e.shape[1:]) != shape:
            raise ValueError(f"experts[{b}] has [L, K] = {tuple(e.shape[1:])}, experts[0] has {shape}")
        shape = tuple(e.shape[1:])
    sizes = [t.n for t in trees]
    offsets = [0] + list(itertools.accumulate(sizes))[:-1]
    parents = torch.cat([t.parents.cpu().long() + torch.where(t.parents.cpu() >= 0, o, 0)
                         for t, o in zip(trees, offsets)])
    p = torch.cat([torch.cat([torch.zeros(1, dtype=torch.float64), q.detach().cpu().double()]) for q in probs])
    if bool(((p < 0) | (p > 1) | p.isnan()).any()):
        raise ValueError("node probabilities must be in [0, 1]")
    ids = torch.cat([e.detach().cpu().long() for e in experts])  # [N, L, K]
    num_experts = int(ids.max()) + 1 if ids.numel() else 1
    if expert_to_rank is not None:
        if num_experts > expert_to_rank.numel():
            raise ValueError(f"expert id {num_experts - 1} has no rank in expert_to_rank "
                             f"of {expert_to_rank.numel()} experts")
        num_experts = int(expert_to_rank.numel())
    tree_of = torch.repeat_interleave(torch.arange(len(trees)), torch.tensor(sizes))
    return _Batch(parents, p, ids, tree_of, offsets, sizes, max(num_experts, 1))


def _coefficients(cost, expert_to_rank) -> tuple[float, float, float, float]:
    k = cost.coefficients if hasattr(cost, "coefficients") else cost
    a, b, c, d = (float(k.get(name, 0.0)) for name in "abcd")
    if min(a, b, c, d) < 0:
        raise ValueError(f"cost coefficients {k} must be >= 0")
    if d > 0 and expert_to_rank is None:
        raise ValueError(f"cost coefficient d = {d} prices EP rank load but no expert_to_rank was given")
    return a, b, c, d


def _rank_info(expert_to_rank):
    if expert_to_rank is None:
        return None, 1
    e2r = expert_to_rank.detach().cpu().long()
    return e2r, int(e2r.max()) + 1


def schedule_value(trees: list[DraftTree], probs: list[torch.Tensor], experts: list[torch.Tensor],
                   keeps: list[torch.Tensor] | None, cost, expert_to_rank: torch.Tensor | None = None,
                   pad_to_widest: bool = True) -> tuple[float, float]:
    """(expected committed tokens, predicted seconds) of verifying the kept nodes of each tree
    (keeps[b]: [n_b] bool mask or indices, root included; None: every node of every tree). The
    objective both schedulers use."""
    batch = _flatten(trees, probs, experts, expert_to_rank)
    if keeps is None:
        return _value(batch, torch.ones(len(batch.parents), dtype=torch.bool), cost, expert_to_rank, pad_to_widest)
    masks = [_keep_mask(k, t.n) for k, t in zip(keeps, trees)]
    return _value(batch, torch.cat(masks), cost, expert_to_rank, pad_to_widest)


def _value(batch: _Batch, valid: torch.Tensor, cost, expert_to_rank, pad_to_widest: bool) -> tuple[float, float]:
    """schedule_value of a flattened batch and its flat [N] keep mask."""
    a, b, c, d = _coefficients(cost, expert_to_rank)
    e2r, num_ranks = _rank_info(expert_to_rank)
    load = el.expert_load(batch.experts[None], valid[None], batch.num_experts, e2r, num_ranks)
    sizes = torch.zeros(len(batch.sizes), dtype=torch.long).index_add_(0, batch.tree_of, valid.long()).tolist()
    tokens = len(batch.sizes) * max(sizes) if pad_to_widest else sum(sizes)
    seconds = (a + b * tokens + c * float(load.batch_counts.sum())
               + d * float(load.max_rank_experts[-1].sum()))
    expected = len(batch.sizes) + float(batch.probs[valid].sum())
    return expected, seconds


# ---- greedy --------------------------------------------------------------------------------------


class _GreedyState:
    """The growing selection and, per node, the marginal cost of adding it, kept up to date
    incrementally: adding a node only lowers other nodes' counts of new expert reads."""

    def __init__(self, batch: _Batch, coefficients, e2r, num_ranks: int, pad_to_widest: bool):
        self.a, self.b, self.c, self.d = coefficients
        self.pad, self.tree_of = pad_to_widest, batch.tree_of
        N, L, _ = batch.experts.shape
        E, R = batch.num_experts, num_ranks
        self.L, self.R, self.B = L, R, len(batch.sizes)
        self.inc = _incidence(batch.experts, E)  # [N, L*E] bool: the node's (layer, expert) reads
        self.inc_t = self.inc.t().contiguous()  # [L*E, N]: which nodes need each read
        self.selected = batch.parents < 0  # [N], the roots
        self.union = self.inc[self.selected].any(0)  # [L*E]
        self.new_cnt = el.marginal_new_experts(self.union.view(L, E), batch.experts)  # [N]
        if self.d > 0:  # distinct experts per (layer, rank), and what each node would add there
            self.col = (torch.arange(L)[:, None] * R + e2r[None, :E]).reshape(-1)  # [L*E] -> [L*R]
            self.rank_cnt = torch.zeros(L * R, dtype=torch.long).index_add_(0, self.col, self.union.long())
            self.new_rank = torch.zeros(N, L * R, dtype=torch.long).index_add_(
                1, self.col, (self.inc & ~self.union).long())  # [N, L*R]
        self.kids: list[list[int]] = [[] for _ in range(N)]
        for v, p in enumerate(batch.parents.tolist()):
            if p >= 0:
                self.kids[p].append(v)
        self.frontier = torch.zeros(N, dtype=torch.bool)  # parent selected, itself not
        self.frontier[[k for r in self.selected.nonzero().squeeze(1).tolist() for k in self.kids[r]]] = True
        self.sizes = torch.ones(self.B, dtype=torch.long)  # [B] selected nodes per tree
        self.seconds = self.a + self.b * self.B + self.c * float(self.union.sum()) + self._rank_term()

    def _rank_term(self) -> float:
        return self.d * float(self.rank_cnt.view(self.L, self.R).amax(-1).sum()) if self.d > 0 else 0.0

    def marginal_costs(self) -> torch.Tensor:
        """[N] float64 seconds each node would add (meaningful on the frontier)."""
        dcost = self.c * self.new_cnt.double()
        if self.pad:  # only a node that widens the widest tree adds rows, one per request
            dcost += self.b * self.B * (self.sizes[self.tree_of] == self.sizes.max()).double()
        else:
            dcost += self.b
        if self.d > 0:
            cur = self.rank_cnt.view(self.L, self.R).amax(-1)  # [L]
            grown = (self.rank_cnt[None] + self.new_rank).view(-1, self.L, self.R).amax(-1)  # [N, L]
            dcost += self.d * (grown - cur[None]).sum(-1).double()
        return dcost

    def take(self, v: int, dcost: float) -> None:
        idx = (self.inc[v] & ~self.union).nonzero().squeeze(1)  # the reads v adds
        if idx.numel():
            hit = self.inc_t[idx]  # [m, N]
            self.new_cnt -= hit.sum(0)
            if self.d > 0:
                self.new_rank.index_add_(1, self.col[idx], -hit.t().long())
                self.rank_cnt.index_add_(0, self.col[idx], torch.ones(len(idx), dtype=torch.long))
            self.union[idx] = True
        self.selected[v], self.frontier[v] = True, False
        self.frontier[self.kids[v]] = True
        self.sizes[self.tree_of[v]] += 1
        self.seconds += dcost


def schedule_batch(trees: list[DraftTree], probs: list[torch.Tensor], experts: list[torch.Tensor], cost,
                   expert_to_rank: torch.Tensor | None = None, pad_to_widest: bool = True,
                   patience: int | None = None, max_expected_loss: float | None = None,
                   native: bool = True, price: float | None = None) -> TreeSchedule:
    """Greedy expert-aware pruning of a batch verified in one forward (module docstring).

    probs[b] [n_b - 1] acceptance probabilities of the non-root nodes; experts[b] [n_b, L, K]
    predicted expert ids (root included, -1 = none); cost: a linear cost model (`coefficients`
    {a, b, c, d}) or such a dict; expert_to_rank [E] for the EP term.
    patience: steps without a new best ratio before giving up. None = try every node: the ratio
    along the greedy order can dip for a while and recover, so a small patience trades quality for
    time (one step is ~0.2 ms on a busy CPU for 4 trees x 64 nodes of a 48-layer, 128-expert top-8
    target). max_expected_loss: keep at least (1 - max_expected_loss) of the candidate trees'
    expected committed tokens (None = ratio only; 0.03 = give up at most 3% of it for speed).
    native: run the greedy in the compiled library when it is available (core/tree_native.py,
    expert_greedy.cpp: the same selection, tens of times faster on large batches).
    price (expected tokens per predicted second, > 0): keep the prefix of the greedy's order with
    the most expected tokens - price x seconds instead of the best ratio. One price shared by
    every round is a Lagrangian: nodes are verified wherever they bring at least `price` tokens a
    second, so the accepted-length loss goes where pruning saves the most verify time
    (docs/bench/cpu-qwen3moe-acceptance/price_allocation.txt). Not with max_expected_loss. The
    result then also carries the whole candidate trees' expected tokens and seconds."""
    if patience is not None and patience < 1:
        raise ValueError(f"patience {patience} must be >= 1 (or None)")
    if price is not None:
        if not (price > 0 and math.isfinite(price)):
            raise ValueError(f"price {price} must be a positive finite number of expected tokens per second")
        if max_expected_loss is not None:
            raise ValueError(f"give a price ({price}) or max_expected_loss ({max_expected_loss}), not both")
    batch = _flatten(trees, probs, experts, expert_to_rank)
    floor = _expected_floor(batch, len(trees), max_expected_loss)
    coefficients, (e2r, num_ranks) = _coefficients(cost, expert_to_rank), _rank_info(expert_to_rank)
    lib = None
    if native:
        from .tree_native import library

        lib = library()
    if lib is not None:
        order, best_len = _greedy_native(lib, batch, coefficients, e2r, num_ranks, pad_to_widest, floor, patience,
                                         price)
    else:
        order, best_len = _greedy_python(batch, coefficients, e2r, num_ranks, pad_to_widest, floor, patience, price)
    keep = batch.parents < 0
    keep[torch.tensor(order[:best_len], dtype=torch.long)] = True
    result = _result(trees, batch, keep, probs, experts, cost, expert_to_rank, pad_to_widest)
    if price is not None:
        result.full_expected, result.full_seconds = _value(batch, torch.ones_like(keep), cost, expert_to_rank,
                                                           pad_to_widest)  # as schedule_value(keeps=None)
    return result


def _greedy_python(batch: _Batch, coefficients, e2r, num_ranks: int, pad_to_widest: bool, floor: float,
                   patience: int | None, price: float | None = None) -> tuple[list[int], int]:
    """The greedy's addition order over the batch's nodes and the length of its best prefix (the
    reference of expert_greedy.cpp). A prefix is judged by its ratio (-1 below the floor), or with
    a price by expected - price x seconds."""
    state = _GreedyState(batch, coefficients, e2r, num_ranks, pad_to_widest)
    gain = batch.probs  # [N]
    expected = float(len(batch.sizes))

    def value_of(e: float, s: float) -> float:
        return e - price * s if price is not None else (_ratio(e, s) if e >= floor else -1.0)

    def better(value: float, best: float) -> bool:
        return value > best + 1e-12 * abs(best) if price is not None else value >= 0 and value > best * (1 + 1e-12)

    best_value = value_of(expected, state.seconds)
    found = price is not None or best_value >= 0
    best_len, order = 0, []
    while bool(state.frontier.any()):
        dcost = state.marginal_costs()  # [N]
        free = state.frontier & (dcost <= 0) & (gain > 0)
        if bool(free.any()):  # free and useful: take the most probable of them
            v = int(torch.where(free, gain, -1.0).argmax())
        else:
            v = int(torch.where(state.frontier, gain / dcost.clamp_min(1e-300), -1.0).argmax())
        state.take(v, float(dcost[v]))
        expected += float(gain[v])
        order.append(v)
        value = value_of(expected, state.seconds)
        if better(value, best_value):
            best_value, best_len, found = value, len(order), True
        elif found and patience is not None and len(order) - best_len >= patience:
            break
    return order, best_len


def _greedy_native(lib, batch: _Batch, coefficients, e2r, num_ranks: int, pad_to_widest: bool, floor: float,
                   patience: int | None, price: float | None = None) -> tuple[list[int], int]:
    """_greedy_python in the compiled library (expert_greedy.cpp)."""
    a, b, c, d = coefficients
    N, L, _ = batch.experts.shape
    E = batch.num_experts
    inc = _incidence(batch.experts, E).to(torch.uint8).contiguous()  # [N, L*E]
    col = ((torch.arange(L)[:, None] * num_ranks + e2r[None, :E]).reshape(-1) if e2r is not None
           else torch.zeros(L * E, dtype=torch.long)).contiguous()
    parents, tree_of = batch.parents.contiguous(), batch.tree_of.long().contiguous()
    gain = batch.probs.double().contiguous()
    order = torch.empty(N, dtype=torch.int64)
    best = torch.zeros(1, dtype=torch.int64)
    steps = lib.jetspec_expert_greedy(N, L * E, L, num_ranks, len(batch.sizes), parents.data_ptr(), gain.data_ptr(),
                                      inc.data_ptr(), col.data_ptr(), tree_of.data_ptr(), a, b, c, d,
                                      int(pad_to_widest), -1 if patience is None else int(patience), floor,
                                      0.0 if price is None else float(price), order.data_ptr(), best.data_ptr())
    return order[:steps].tolist(), int(best)


def schedule_tree(tree: DraftTree, probs: torch.Tensor, experts: torch.Tensor, cost,
                  **kwargs) -> TreeSchedule:
    """`schedule_batch` for one tree (its own forward)."""
    return schedule_batch([tree], [probs], [experts], cost, **kwargs)


def _incidence(experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """[N, L, K] expert ids (-1 = none) -> [N, L*E] bool membership (a repeated id counts once)."""
    ids = experts.long()
    hit = torch.zeros(*ids.shape[:2], num_experts + 1, dtype=torch.bool)
    hit.scatter_(2, torch.where(ids >= 0, ids, num_experts), True)
    return hit[..., :num_experts].flatten(1)


def _expected_floor(batch: _Batch, num_trees: int, max_expected_loss: float | None) -> float:
    """The least expected committed tokens a selection may keep (minus rounding slack)."""
    if max_expected_loss is None:
        return float("-inf")
    if not 0.0 <= max_expected_loss <= 1.0:
        raise ValueError(f"max_expected_loss {max_expected_loss} must be in [0, 1] (a fraction)")
    full = num_trees + float(batch.probs.sum())
    return (1.0 - max_expected_loss) * full - 1e-9 * full


def _ratio(expected: float, seconds: float) -> float:
    return expected / seconds if seconds > 0 else float("inf")


def _result(trees, batch: _Batch, keep: torch.Tensor, probs, experts, cost, expert_to_rank,
            pad_to_widest) -> TreeSchedule:
    masks = [keep[o: o + n] for o, n in zip(batch.offsets, batch.sizes)]
    expected, seconds = _value(batch, keep, cost, expert_to_rank, pad_to_widest)
    # a tree kept whole is its own pruned tree (prune_tree's tensor work is ~0.2 ms a tree)
    return TreeSchedule(trees=[t if bool(m.all()) else prune_tree(t, m) for t, m in zip(trees, masks)],
                        kept=[m.nonzero().squeeze(1) for m in masks],
                        expected_tokens=expected, seconds=seconds)


# ---- exhaustive reference ------------------------------------------------------------------------


def closed_subsets(tree: DraftTree) -> torch.Tensor:
    """[S, n] bool: every ancestor-closed node subset containing the root (2^(n-1) candidates
    checked, so tiny trees only)."""
    n = tree.n
    if n > 16:
        raise ValueError(f"closed_subsets enumerates 2^(n-1) sets; n = {n} must be <= 16")
    parents = tree.parents.cpu().long()
    codes = torch.arange(1 << (n - 1))
    bits = ((codes[:, None] >> torch.arange(n - 1)) & 1).bool()  # [2^(n-1), n-1]: nodes 1..n-1
    sets = torch.cat([torch.ones(len(codes), 1, dtype=torch.bool), bits], 1)  # [2^(n-1), n]
    closed = (~sets[:, 1:] | sets[:, parents[1:]]).all(1)
    return sets[closed]


def exhaustive_schedule(trees: list[DraftTree], probs: list[torch.Tensor], experts: list[torch.Tensor], cost,
                        expert_to_rank: torch.Tensor | None = None, pad_to_widest: bool = True,
                        max_expected_loss: float | None = None, price: float | None = None) -> TreeSchedule:
    """The best ancestor-closed selection by enumeration (reference for `schedule_batch`): every
    joint choice of one closed subset per tree is scored at once (so a few tiny trees only). With a
    price: the most expected tokens - price x seconds."""
    batch = _flatten(trees, probs, experts, expert_to_rank)
    a, b, c, d = _coefficients(cost, expert_to_rank)
    e2r, num_ranks = _rank_info(expert_to_rank)
    E = batch.num_experts
    union = torch.zeros(1, *batch.experts.shape[1:2], E, dtype=torch.bool)  # [C, L, E] per joint choice
    sizes = torch.zeros(1, 0, dtype=torch.long)  # [C, trees so far]
    expected = torch.full((1,), float(len(trees)), dtype=torch.float64)  # [C]
    choice = torch.zeros(1, 0, dtype=torch.long)  # [C, trees so far] subset index per tree
    subsets = []
    for t, o in zip(trees, batch.offsets):
        sets = closed_subsets(t)  # [S, n]
        subsets.append(sets)
        if union.shape[0] * sets.shape[0] > 1 << 16:
            raise ValueError(f"more than {1 << 16} joint selections to enumerate")
        node_sets = _incidence(batch.experts[o: o + t.n], E).float()  # [n, L*E]
        tree_union = (sets.float() @ node_sets > 0).view(len(sets), *union.shape[1:])  # [S, L, E]
        S, C = len(sets), union.shape[0]
        union = (union[:, None] | tree_union[None]).flatten(0, 1)  # [C*S, L, E]
        sizes = torch.cat([sizes.repeat_interleave(S, 0), sets.sum(1).repeat(C)[:, None]], 1)
        gain = sets.double() @ batch.probs[o: o + t.n]  # [S]
        expected = (expected[:, None] + gain[None]).flatten()
        choice = torch.cat([choice.repeat_interleave(S, 0), torch.arange(S).repeat(C)[:, None]], 1)
    tokens = len(trees) * sizes.amax(1) if pad_to_widest else sizes.sum(1)  # [C]
    seconds = a + b * tokens.double() + c * union.sum((1, 2)).double()
    if d > 0:
        seconds = seconds + d * el.rank_loads(union, e2r, num_ranks).amax(-1).sum(-1).double()
    if price is not None:
        best = int((expected - price * seconds).argmax())
    else:
        ratio = torch.where(expected >= _expected_floor(batch, len(trees), max_expected_loss), expected / seconds, -1.0)
        best = int(ratio.argmax())
    keep = torch.cat([subsets[t][int(choice[best, t])] for t in range(len(trees))])
    return _result(trees, batch, keep, probs, experts, cost, expert_to_rank, pad_to_widest)
