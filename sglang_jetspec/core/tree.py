"""The JetSpec draft tree: best-first construction from one head forward.

The JetSpec head drafts all depths in one forward, so it yields one log-prob row per depth
(`draft_logprobs[d]` scores the token at depth d+1, the same row for every node of that depth).
The candidate tree is the full W-ary tree whose depth-d nodes take their children from the
top-W tokens of row d; the draft tree keeps the root plus the B-1 candidates with the highest
cumulative log-prob. A child never outscores its parent (log-probs are <= 0) and a sibling of
rank r+1 never outscores rank r, so a heap that pops the best frontier node and pushes only its
next sibling and its first child finds exactly those nodes in O(B log B).

For lossless sampling (recursive rejection sampling) the tree SHAPE must not depend on which
tokens were drawn: `resample_children` keeps the shape and redraws every sibling group without
replacement from the draft distribution.

Everything here is pure torch; the tree itself is at most a few hundred nodes and is built on
the host. `build_tree` makes three small device-to-host copies per call (the NaN check, the max
check and the [max_depth, W] top-W table), which matters only when draft_logprobs lives on a GPU.
The tree only ever reads each row's top-W, so `build_tree_from_top` takes that table directly:
the server worker computes it where the draft ran and moves [b, D, W] to the host, not [b, D, V].
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from operator import add
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from sglang_jetspec.core.pair_prior import PairPrior

# log-probs are <= 0; allow a little rounding slack from log_softmax in low precision
_LOGPROB_SLACK = 1e-4


@dataclass
class DraftTree:
    """One request's draft tree, nodes in topological order (parents[i] < i)."""

    tokens: torch.Tensor  # [n] long; tokens[0] = root = last committed token (anchor)
    parents: torch.Tensor  # [n] long; parents[0] = -1
    depths: torch.Tensor  # [n] long; depths[0] = 0
    scores: torch.Tensor  # [n] float; cumulative draft log-prob of the path, root 0.0
    ranks: torch.Tensor  # [n] long; position among the parent's children, root 0

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    def ancestor_mask(self) -> torch.Tensor:
        """[n, n] bool, mask[i, j] True iff j is i or an ancestor of i (tree attention)."""
        n = self.n
        device = self.tokens.device
        # reach[i, j] = 1 iff j is i or i's parent; squaring doubles the path length covered
        reach = torch.eye(n, dtype=torch.float32, device=device)  # [n, n]
        child = torch.arange(1, n, device=device)
        reach[child, self.parents[1:].to(device)] = 1.0
        covered = 1
        while covered < n - 1:  # the deepest node is at most n-1 steps below the root
            reach = (reach @ reach > 0).float()
            covered *= 2
        return reach > 0

    def children(self) -> list[list[int]]:
        """Child indices of every node, in rank order."""
        kids: list[list[tuple[int, int]]] = [[] for _ in range(self.n)]
        for i, (p, r) in enumerate(zip(self.parents.tolist(), self.ranks.tolist())):
            if p >= 0:
                kids[p].append((r, i))
        return [[i for _, i in sorted(k)] for k in kids]

    def path_to(self, i: int) -> list[int]:
        """Node indices from the root to node i (inclusive)."""
        if not 0 <= i < self.n:
            raise IndexError(f"node {i} out of range for a tree of {self.n} nodes")
        parents = self.parents.tolist()
        path = [i]
        while parents[path[-1]] >= 0:
            path.append(parents[path[-1]])
        return path[::-1]

    def validate(self) -> None:
        """Raise ValueError if any structural invariant is broken."""
        n = self.n
        for name in ("tokens", "parents", "depths", "scores", "ranks"):
            t = getattr(self, name)
            if t.dim() != 1 or t.shape[0] != n:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected [{n}]")
        if n < 1:
            raise ValueError("a draft tree needs at least the root node, got n = 0")
        if not self.scores.is_floating_point():
            raise ValueError(f"scores dtype {self.scores.dtype} must be floating point")
        tokens, parents = self.tokens.tolist(), self.parents.tolist()
        depths, ranks = self.depths.tolist(), self.ranks.tolist()
        if parents[0] != -1 or depths[0] != 0 or ranks[0] != 0:
            raise ValueError(
                f"root must have parent -1, depth 0, rank 0; got {parents[0]}, {depths[0]}, {ranks[0]}"
            )
        if float(self.scores[0]) != 0.0:
            raise ValueError(f"root score {float(self.scores[0])} must be 0.0")
        if min(tokens) < 0:
            raise ValueError(f"token ids must be >= 0, got {min(tokens)}")
        for i in range(1, n):
            p = parents[i]
            if not 0 <= p < i:
                raise ValueError(f"parents[{i}] = {p} must be in [0, {i}) (topological order)")
            if depths[i] != depths[p] + 1:
                raise ValueError(f"depths[{i}] = {depths[i]} must be depths[parent {p}] + 1 = {depths[p] + 1}")
        for p, kids in enumerate(self.children()):
            got = [ranks[c] for c in kids]
            if got != list(range(len(kids))):
                raise ValueError(f"children of node {p} have ranks {got}, expected 0..{len(kids) - 1}")
            toks = [tokens[c] for c in kids]
            if len(set(toks)) != len(toks):
                raise ValueError(f"children of node {p} repeat a token: {toks}")


def _check_logprobs(draft_logprobs: torch.Tensor) -> None:
    if draft_logprobs.dim() != 2 or not draft_logprobs.is_floating_point():
        raise ValueError(
            f"draft_logprobs must be a 2-D float tensor [D, V], got shape "
            f"{tuple(draft_logprobs.shape)} dtype {draft_logprobs.dtype}"
        )
    if draft_logprobs.shape[0] < 1 or draft_logprobs.shape[1] < 1:
        raise ValueError(f"draft_logprobs shape {tuple(draft_logprobs.shape)} must have D >= 1 and V >= 1")


def _check_tree_args(root_token: int, budget: int, width: int, max_depth: int | None, n_rows: int) -> int:
    """Validate the shared arguments of the tree builders; returns max_depth (default: n_rows)."""
    if max_depth is None:
        max_depth = n_rows
    if budget < 1:
        raise ValueError(f"budget {budget} must be >= 1 (it counts the root)")
    if width < 1:
        raise ValueError(f"width {width} must be >= 1")
    if not 1 <= max_depth <= n_rows:
        raise ValueError(f"max_depth {max_depth} must be in [1, D = {n_rows}]")
    if root_token < 0:
        raise ValueError(f"root_token {root_token} must be >= 0")
    return max_depth


def build_tree(
    root_token: int,
    draft_logprobs: torch.Tensor,  # [D, V], row d scores the token at depth d+1
    budget: int,
    width: int,
    max_depth: int | None = None,
) -> DraftTree:
    """Best-first draft tree: the root plus the budget-1 best candidates of the W-ary tree.

    budget counts the root, so budget 1 is plain decoding. Nodes are stored in pop order, which
    is topological; ties pop in insertion order, so the result is deterministic.
    """
    _check_logprobs(draft_logprobs)
    n_rows, vocab = draft_logprobs.shape
    max_depth = _check_tree_args(root_token, budget, width, max_depth, n_rows)
    if torch.isnan(draft_logprobs).any():
        raise ValueError("draft_logprobs contains NaN")
    top = float(draft_logprobs.max())
    if top > _LOGPROB_SLACK:
        raise ValueError(f"draft_logprobs max {top} > 0: pass log-probs (log_softmax), not logits")

    w = min(width, vocab)
    top_vals, top_ids = draft_logprobs[:max_depth].float().topk(w, dim=-1)  # [max_depth, w]
    return _best_first(root_token, top_vals.tolist(), top_ids.tolist(), budget, w, max_depth,
                       draft_logprobs.device)


def build_tree_from_top(
    root_token: int,
    top_vals: torch.Tensor,  # [D, k] each row's k best draft log-probs, descending
    top_ids: torch.Tensor,  # [D, k] their token ids
    budget: int,
    width: int,
    max_depth: int | None = None,
    prior: "PairPrior | None" = None,
    prev_token: int | None = None,
) -> DraftTree:
    """build_tree from each row's top-k table (k >= width gives the same tree as the full rows;
    a smaller k caps the width at k).

    With a `prior` (core/pair_prior.py) a node's children are the `width` best of the row's k
    candidates by min(0, draft log-prob + prior bonus under the node's and its parent's tokens;
    `prev_token` = the committed token before the root), so children depend on their path; node
    scores then hold those rescored sums. k is the candidate pool: pass prior.settings.pool
    columns for the prior to choose from."""
    if top_vals.dim() != 2 or top_vals.shape != top_ids.shape or top_vals.shape[1] < 1:
        raise ValueError(f"top_vals {tuple(top_vals.shape)} and top_ids {tuple(top_ids.shape)} must both be "
                         "[D, k] with k >= 1")
    n_rows = top_vals.shape[0]
    max_depth = _check_tree_args(root_token, budget, width, max_depth, n_rows)
    w = min(width, top_vals.shape[1])
    vals = top_vals[:max_depth, :w].float()
    if torch.isnan(vals).any():
        raise ValueError("top_vals contains NaN")
    if float(vals.max()) > _LOGPROB_SLACK:
        raise ValueError(f"top_vals max {float(vals.max())} > 0: pass log-probs (log_softmax), not logits")
    if w > 1 and bool((vals[:, 1:] > vals[:, :-1]).any()):
        raise ValueError("top_vals rows must be in descending order (as topk returns them)")
    if prior is not None:
        pool = top_vals[:max_depth].float()
        if torch.isnan(pool).any() or float(pool.max()) > _LOGPROB_SLACK:
            raise ValueError("top_vals must be log-probs without NaN")
        if prev_token is not None and prev_token < 0:
            raise ValueError(f"prev_token {prev_token} must be >= 0 (or None)")
        return _best_first_rescored(root_token, pool.tolist(), top_ids[:max_depth].tolist(), budget, w, max_depth,
                                    top_vals.device, prior, prev_token)
    return _best_first(root_token, vals.tolist(), top_ids[:max_depth, :w].tolist(), budget, w, max_depth,
                       top_vals.device)


def build_trees_from_top(
    roots: Sequence[int],
    top_vals: torch.Tensor,  # [b, D, k] each request's per-row k best draft log-probs, descending
    top_ids: torch.Tensor,  # [b, D, k] their token ids
    budgets: Sequence[int],
    widths: Sequence[int],
    max_depths: Sequence[int],
    prior: "PairPrior | None" = None,
    prev_tokens: Sequence[int | None] | None = None,
    native: bool = True,
) -> list[DraftTree]:
    """[build_tree_from_top(roots[i], top_vals[i], top_ids[i], budgets[i], widths[i], max_depths[i],
    prior, prev_tokens[i]) for each request i]: the same trees and the same checks, with the
    checks and the host copy made once for the batch instead of once per request (a dozen small
    tensor operations each, about a third of a budget-32 tree's time with the prior). With `native`
    the trees come from the compiled builders when they are available (core/tree_native.py; the
    same trees; with the prior about 8x faster from batch 8 on)."""
    if top_vals.dim() != 3 or top_vals.shape != top_ids.shape or top_vals.shape[2] < 1:
        raise ValueError(f"top_vals {tuple(top_vals.shape)} and top_ids {tuple(top_ids.shape)} must both be "
                         "[b, D, k] with k >= 1")
    b, n_rows, k = top_vals.shape
    if prev_tokens is None:
        prev_tokens = [None] * b
    if not len(roots) == len(budgets) == len(widths) == len(max_depths) == len(prev_tokens) == b:
        raise ValueError(f"roots, budgets, widths, max_depths and prev_tokens need one entry per request ({b}); "
                         f"got {len(roots)}, {len(budgets)}, {len(widths)}, {len(max_depths)}, {len(prev_tokens)}")
    if b == 0:
        return []
    depths = [_check_tree_args(roots[i], budgets[i], widths[i], max_depths[i], n_rows) for i in range(b)]
    ws = [min(x, k) for x in widths]
    if prior is not None:
        for p in prev_tokens:
            if p is not None and p < 0:
                raise ValueError(f"prev_token {p} must be >= 0 (or None)")
    vals = top_vals.detach().float().cpu()
    _check_batch_tables(vals, depths, ws, prior is not None)
    device = top_vals.device
    if native:
        from .tree_native import build_plain, build_rescored, library

        lib = library()
        if lib is not None:  # the compiled twins of _best_first / _best_first_rescored (tree_native.cpp)
            ids = top_ids.cpu()
            if prior is None:
                built = build_plain(lib, roots, vals, ids, budgets, ws, depths)
            else:
                built = build_rescored(lib, prior, roots, vals, ids, budgets, ws, depths, prev_tokens)
            *tables, sizes = built
            tables[3] = tables[3].float()  # scores
            stride = tables[0].shape[1]
            pieces = [x for n in sizes for x in (n, stride - n)]  # each request's nodes, then its padding
            fields = [t.to(device).view(-1).split_with_sizes(pieces)[::2] for t in tables]
            return [DraftTree(*tree) for tree in zip(*fields)]
    val_lists, id_lists = vals.tolist(), top_ids.cpu().tolist()
    if prior is None:
        return [_best_first(roots[i], val_lists[i], id_lists[i], budgets[i], ws[i], depths[i], device)
                for i in range(b)]
    return [_best_first_rescored(roots[i], val_lists[i], id_lists[i], budgets[i], ws[i], depths[i], device,
                                 prior, prev_tokens[i]) for i in range(b)]


def _check_batch_tables(vals: torch.Tensor, depths: list[int], ws: list[int], with_prior: bool) -> None:
    """What each request's own build_tree_from_top call checks, once for the batch: its rows below
    its depth and its first w columns (every column of those rows with a prior, which chooses
    among them). max() propagates NaN, so one reduction finds both NaN and positive values."""
    n_rows = vals.shape[1]
    if len(set(depths)) == 1 and len(set(ws)) == 1:  # the usual batch: one shape, plain slices
        first, rows = vals[:, :depths[0], :ws[0]], vals[:, :depths[0]]
        pairs_bad = ws[0] > 1 and bool((first[:, :, 1:] > first[:, :, :-1]).any())
    else:
        in_rows = torch.arange(n_rows)[None, :, None] < torch.tensor(depths)[:, None, None]  # [b, D, 1]
        w_max = max(ws)
        inside = in_rows & (torch.arange(w_max)[None, None, :] < torch.tensor(ws)[:, None, None])
        first = torch.where(inside, vals[:, :, :w_max], float("-inf"))
        rows = torch.where(in_rows, vals, float("-inf"))
        pairs_bad = w_max > 1 and bool(((first[:, :, 1:] > first[:, :, :-1]) & inside[:, :, 1:]).any())
    top = float(first.max())
    if math.isnan(top):
        raise ValueError("top_vals contains NaN")
    if top > _LOGPROB_SLACK:
        raise ValueError(f"top_vals max {top} > 0: pass log-probs (log_softmax), not logits")
    if pairs_bad:
        raise ValueError("top_vals rows must be in descending order (as topk returns them)")
    if with_prior:
        top = float(rows.max())
        if math.isnan(top) or top > _LOGPROB_SLACK:
            raise ValueError("top_vals must be log-probs without NaN")


def _to_tree(tokens: list[int], parents: list[int], depths: list[int], scores: list[float], ranks: list[int],
             device) -> DraftTree:
    """A DraftTree from the builders' node lists."""
    return DraftTree(
        tokens=torch.tensor(tokens, dtype=torch.long, device=device),
        parents=torch.tensor(parents, dtype=torch.long, device=device),
        depths=torch.tensor(depths, dtype=torch.long, device=device),
        scores=torch.tensor(scores, dtype=torch.float32, device=device),
        ranks=torch.tensor(ranks, dtype=torch.long, device=device),
    )


def _best_first(root_token: int, vals: list[list[float]], ids: list[list[int]], budget: int, w: int,
                max_depth: int, device) -> DraftTree:
    """The heap walk over the W-ary candidate tree of per-depth top-w tables (lists)."""
    tokens, parents, depths, scores, ranks = [root_token], [-1], [0], [0.0], [0]
    # heap entry: (-score, insertion counter, parent node, depth of the candidate, rank)
    heap: list[tuple[float, int, int, int, int]] = []
    counter = 0

    def push(parent: int, depth: int, rank: int) -> None:
        nonlocal counter
        heapq.heappush(heap, (-(scores[parent] + vals[depth - 1][rank]), counter, parent, depth, rank))
        counter += 1

    if budget > 1:
        push(0, 1, 0)
    while heap and len(tokens) < budget:
        neg_score, _, parent, depth, rank = heapq.heappop(heap)
        node = len(tokens)
        tokens.append(ids[depth - 1][rank])
        parents.append(parent)
        depths.append(depth)
        scores.append(-neg_score)
        ranks.append(rank)
        if rank + 1 < w:  # lazily expose the next sibling
            push(parent, depth, rank + 1)
        if depth < max_depth:  # and the best child
            push(node, depth + 1, 0)

    return _to_tree(tokens, parents, depths, scores, ranks, device)


def _best_first_rescored(root_token: int, vals: list[list[float]], ids: list[list[int]], budget: int, w: int,
                         max_depth: int, device, prior, prev_token: int | None) -> DraftTree:
    """Best-first where every node orders its own children: the w best of its row's candidates by
    min(0, draft log-prob + prior bonus under the node's path), computed when the node is added.
    Ties pop by (parent node, rank)."""
    tokens, parents, depths, scores, ranks = [root_token], [-1], [0], [0.0], [0]
    kids: dict[int, list[tuple[float, int]]] = {}  # node -> its children's (increment, token), best first
    heap: list[tuple[float, int, int]] = []  # (-score, parent node, rank)

    def open_children(node: int) -> None:
        grand = tokens[parents[node]] if node else prev_token
        row_vals, row_ids = vals[depths[node]], ids[depths[node]]
        inc = [x if x < 0.0 else 0.0 for x in map(add, row_vals, prior.bonus(grand, tokens[node], row_ids))]
        order = sorted(range(len(inc)), key=inc.__getitem__, reverse=True)[:w]  # stable: ties keep draft order
        kids[node] = [(inc[j], row_ids[j]) for j in order]
        heapq.heappush(heap, (-(scores[node] + kids[node][0][0]), node, 0))

    if budget > 1:
        open_children(0)
    while heap and len(tokens) < budget:
        neg_score, parent, rank = heapq.heappop(heap)
        node = len(tokens)
        tokens.append(kids[parent][rank][1])
        parents.append(parent)
        depths.append(depths[parent] + 1)
        scores.append(-neg_score)
        ranks.append(rank)
        if rank + 1 < len(kids[parent]):
            heapq.heappush(heap, (-(scores[parent] + kids[parent][rank + 1][0]), parent, rank + 1))
        if depths[node] < max_depth:
            open_children(node)

    return _to_tree(tokens, parents, depths, scores, ranks, device)


def node_draft_logprobs(tree: DraftTree, top_vals: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
    """[n] float32: each node's own draft log-prob (its depth row's value for its token), root 0.

    The tree's scores are cumulative and, with the n-gram prior, rescored and capped at 0 per step,
    so they hide how sure the draft itself was; the per-row tables the tree was built from
    (top_vals / top_ids [D, k] of ONE request) still hold it. A node whose token is not in its
    row's table (a table cut narrower than the tree's) gets -inf."""
    if tree.n == 1:
        return torch.zeros(1, dtype=torch.float32)
    depths, tokens = tree.depths[1:].cpu().long(), tree.tokens[1:].cpu().long()
    if int(depths.max()) > top_ids.shape[0]:
        raise ValueError(f"tree depth {int(depths.max())} exceeds the table's {top_ids.shape[0]} rows")
    ids, vals = top_ids.cpu()[depths - 1], top_vals.cpu().float()[depths - 1]  # [n - 1, k]
    own = torch.where(ids == tokens[:, None], vals, torch.tensor(float("-inf"))).amax(-1)
    return torch.cat([torch.zeros(1), own])


def limits_for_remaining(budget: int, max_depth: int, remaining: int | None) -> tuple[int, int]:
    """(budget, max_depth) for a round when a request may emit only `remaining` more tokens.

    A round commits the accepted path plus one bonus token, so a node deeper than
    remaining - 1 can never be used; with one token left nothing is drafted (budget 1, the
    root alone). remaining None = unbounded. The server worker and the reference decoder both
    apply it, so their trees stay identical at the end of a generation."""
    if remaining is None:
        return budget, max_depth
    depth = min(max_depth, remaining - 1)
    return (budget, depth) if depth >= 1 else (1, 1)


def build_trees(
    root_tokens: torch.Tensor,  # [b] long
    draft_logprobs: torch.Tensor,  # [b, D, V]
    budget: int,
    width: int,
    max_depth: int | None = None,
) -> list[DraftTree]:
    """build_tree for every request of a batch."""
    if root_tokens.dim() != 1 or draft_logprobs.dim() != 3 or draft_logprobs.shape[0] != root_tokens.shape[0]:
        raise ValueError(
            f"root_tokens {tuple(root_tokens.shape)} and draft_logprobs {tuple(draft_logprobs.shape)} "
            "must be [b] and [b, D, V] with the same b"
        )
    return [
        build_tree(int(r), lp, budget, width, max_depth)
        for r, lp in zip(root_tokens.tolist(), draft_logprobs)
    ]


def resample_problem(tree: DraftTree, draft_probs: torch.Tensor) -> str | None:  # [D, V]
    """Why `resample_children` cannot redraw `tree` from draft_probs (a parent deeper than its
    rows, or a sibling group wider than the nonzero entries of its row), or None when it can.
    Reads only the tree's shape and draft_probs, never a draw."""
    depths = tree.depths.tolist()
    groups = [(p, c, depths[p]) for p, c in enumerate(tree.children()) if c]
    if not groups:
        return None
    deepest, n_rows = max(d for *_, d in groups), draft_probs.shape[0]
    if deepest >= n_rows:
        return f"tree has parents at depth {deepest} but draft_probs has only {n_rows} rows"
    used = sorted({d for *_, d in groups})
    support = dict(zip(used, (draft_probs[torch.tensor(used, device=draft_probs.device)] > 0).sum(-1).tolist()))
    for p, c, d in groups:
        if support[d] < len(c):
            return (f"node {p} needs {len(c)} distinct children but draft_probs row {d} has only "
                    f"{support[d]} nonzero entries; cap the tree width")
    return None


def resample_children(
    tree: DraftTree,
    draft_probs: torch.Tensor,  # [D, V], row d = draft distribution of the token at depth d+1
    generator: torch.Generator,
) -> DraftTree:
    """Same shape, fresh tokens: each sibling group is a draw without replacement.

    For every parent at depth d with k children, the children get k distinct tokens drawn
    sequentially without replacement from draft_probs[d] (rank 0 = first draw). Groups are
    independent. Uses the Gumbel-top-k trick: the top-k of log p + Gumbel noise is distributed
    exactly as k sequential draws without replacement, in order. ValueError (see
    `resample_problem`) when a group cannot be drawn.
    """
    _check_logprobs(draft_probs)
    if (draft_probs < 0).any():
        raise ValueError("draft_probs has negative entries; rows must be probability vectors")
    problem = resample_problem(tree, draft_probs)
    if problem is not None:
        raise ValueError(problem)
    kids = tree.children()
    groups = [(p, c) for p, c in enumerate(kids) if c]
    tokens = tree.tokens.clone()
    if not groups:
        return DraftTree(tokens, tree.parents.clone(), tree.depths.clone(), tree.scores.clone(), tree.ranks.clone())

    device = draft_probs.device
    depths = tree.depths.tolist()
    group_depths = [depths[p] for p, _ in groups]
    k_max = max(len(c) for _, c in groups)
    used = sorted(set(group_depths))  # the draft rows some group draws from
    dist = draft_probs[torch.tensor(used, device=device)].float()  # [u, V]
    positive = dist > 0  # [u, V]
    # only the columns some group can draw when they are at most half (a draft vocabulary: a
    # sixth of the tokens); otherwise every column, so a (nearly) full support draws exactly
    # what it drew before this shortcut
    cols = positive.any(0).nonzero().squeeze(1)  # [S]
    narrow = 2 * cols.numel() <= dist.shape[1]
    if narrow:
        dist = dist[:, cols]
    row_of = {d: i for i, d in enumerate(used)}
    rows = dist[torch.tensor([row_of[d] for d in group_depths], device=device)]  # [m, S or V]
    u = torch.rand(rows.shape, generator=generator, device=device)  # [m, S or V]
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
    drawn = (rows.log() + gumbel).topk(k_max, dim=-1).indices  # [m, k_max] in draw order
    if narrow:
        drawn = cols[drawn]

    for g, (_, c) in enumerate(groups):
        tokens[torch.tensor(c, device=tokens.device)] = drawn[g, : len(c)].to(tokens.device)

    # cumulative log q along each path: scores = ancestor_mask @ per-node log q
    node_logq = torch.zeros(tree.n, dtype=torch.float32, device=device)  # [n]
    parent_depth = tree.depths[1:].to(device) - 1
    node_logq[1:] = draft_probs[parent_depth, tokens[1:].to(device)].float().log()
    mask = tree.ancestor_mask().to(device)
    scores = torch.where(mask, node_logq.unsqueeze(0), torch.zeros((), device=device)).sum(-1)  # [n]
    return DraftTree(
        tokens=tokens,
        parents=tree.parents.clone(),
        depths=tree.depths.clone(),
        scores=scores.to(tree.scores.device),
        ranks=tree.ranks.clone(),
    )
