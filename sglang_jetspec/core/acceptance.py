"""Which drafted tokens a verify round commits: greedy, and two lossless sampling rules.

Every rule is the same walk down the tree: at the current node pick the next token by the rule;
if a child carries that token move into it, otherwise commit the token as the bonus and stop.
The rules differ only in how they pick the token at a node:
- greedy: the target argmax;
- walk: a fresh target sample (lossless trivially: every committed token is a target sample);
- rrs: recursive rejection sampling over the siblings, which returns a token with exactly the
  target distribution while accepting a drafted child as often as possible.

Rows: `target_*[i]` is the target's next-token row given the committed prefix plus the path to
node i (one verify forward yields all of them). These are reference rules on small per-round
data; they sync to the host once per visited node (`.item()`/`.tolist()`), by design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from sglang_jetspec.core.tree import DraftTree


@dataclass
class AcceptResult:
    accepted_nodes: list[int]  # tree node indices of the accepted path, starting with 0 (root)
    tokens: list[int]  # committed this round: tokens of the accepted non-root nodes + bonus
    bonus_token: int

    @property
    def num_accepted_drafts(self) -> int:
        return len(self.accepted_nodes) - 1


# pick(node, child_tokens) -> the token committed after `node`
_Pick = Callable[[int, list[int]], int]


def _walk(tree: DraftTree, pick: _Pick) -> AcceptResult:
    """Follow picked tokens into matching children; the first unmatched pick is the bonus."""
    kids, toks = tree.children(), tree.tokens.tolist()
    node, path = 0, [0]
    while True:
        child_tokens = [toks[c] for c in kids[node]]
        y = pick(node, child_tokens)
        if y not in child_tokens:  # siblings carry distinct tokens: at most one match
            return AcceptResult(path, [toks[i] for i in path[1:]] + [y], y)
        node = kids[node][child_tokens.index(y)]
        path.append(node)


def _check_rows(tree: DraftTree, rows: torch.Tensor, name: str) -> None:
    if rows.dim() != 2 or rows.shape[0] != tree.n:
        raise ValueError(f"{name} has shape {tuple(rows.shape)}, expected [n = {tree.n}, V]")


def accept_greedy(tree: DraftTree, target_logits: torch.Tensor) -> AcceptResult:  # [n, V]
    """Deepest path whose every token is the target argmax at its parent; bonus = argmax there."""
    _check_rows(tree, target_logits, "target_logits")
    argmax = target_logits.argmax(dim=-1).tolist()  # [n], one host sync
    return _walk(tree, lambda node, _: argmax[node])


def accept_greedy_lazy(tree: DraftTree, row: Callable[[int], torch.Tensor]) -> AcceptResult:
    """accept_greedy computing target rows only where the walk goes: ``row(i)`` -> logits [V]
    of node i, called for at most depth + 1 of the n nodes (the fast path when the lm_head
    is costly and most of the tree is rejected). Same result as accept_greedy on all rows."""
    return _walk(tree, lambda node, _: int(row(node).argmax()))


def accept_sampling_walk(
    tree: DraftTree, target_probs: torch.Tensor, generator: torch.Generator  # [n, V]
) -> AcceptResult:
    """Reference rule: y ~ target row at the current node; follow y if drafted, else bonus y.

    Lossless for ANY tree (drafts are never consulted for probabilities), but it accepts a child
    only when the target happens to sample its token: weaker than rrs when q is close to p.
    """
    _check_rows(tree, target_probs, "target_probs")
    return _walk(tree, lambda node, _: _sample(target_probs[node], generator))


def _sample(probs: torch.Tensor, generator: torch.Generator) -> int:  # [V], unnormalised is fine
    """Inverse-CDF draw: the first token whose cumulative mass exceeds u * total, so never a token
    of probability 0 (a third of the cost of torch.multinomial on small rows)."""
    cdf = probs.double().cumsum(0)  # [V]
    total = float(cdf[-1])
    if not total > 0.0:
        raise ValueError(f"cannot sample from a row with total mass {total}; expected > 0")
    idx = int(torch.searchsorted(cdf, _uniform(generator, probs.device) * total, right=True))
    if idx == cdf.shape[0]:  # u * total rounded up to total: the last token with mass
        idx = int((probs > 0).nonzero()[-1])
    return idx


def _uniform(generator: torch.Generator, device: torch.device) -> float:
    return float(torch.rand((), dtype=torch.float64, generator=generator, device=device))


def _normalise(v: torch.Tensor) -> torch.Tensor:
    total = float(v.sum())
    return v / total if total > 0.0 else v


def rrs_pick(
    p: torch.Tensor, q: torch.Tensor, drafts: list[int], generator: torch.Generator  # [V], [V]
) -> int:
    """A token distributed exactly as p, equal to one of `drafts` as often as the rule allows.

    drafts must be draws WITHOUT replacement from q, in draw order. For j = 1..k: accept x_j with
    prob min(1, p_j(x_j)/q_j(x_j)); on rejection p_{j+1} = (p_j - q_j)^+ / Z and q_{j+1} = q_j with
    x_j removed, renormalised; if all are rejected, sample p_{k+1}.
    Why lossless (induction from the last draft back): suppose that, given any p', q', drafts drawn
    w/o replacement from q' yield a token ~ p'. At step j, P(return x_j = y) = q_j(y) min(1, p_j/q_j)
    = min(p_j, q_j)(y); P(reject) = 1 - sum min(p_j, q_j) = sum (p_j - q_j)^+ = Z; given a rejection
    of any x_j, the later drafts are w/o-replacement draws from q_{j+1}, so they return ~ p_{j+1},
    which does not depend on x_j. Total: min(p_j, q_j) + (p_j - q_j)^+ = p_j.
    Degenerate cases: q_j(x_j) = 0 cannot be a draw from q_j; removing x_j leaves q_j unchanged, so
    skipping it keeps the invariant (such a token can still come out of the final residual).
    Z = 0 means p_j <= q_j with equal totals, i.e. p_j == q_j up to rounding, so a rejection has
    probability zero; on that null event any p_{j+1} is lossless and we keep p_j. A rejected x_j
    gets p_{j+1}(x_j) = 0 (rejection needs p_j(x_j) < q_j(x_j)), so it never comes out again.
    """
    p = _normalise(p.double())
    q = _normalise(q.double())
    for x in drafts:
        qx, px = float(q[x]), float(p[x])
        if qx <= 0.0:
            continue
        if px >= qx or _uniform(generator, p.device) * qx < px:
            return x
        residual = (p - q).clamp_min(0.0)  # [V]
        if float(residual.sum()) > 0.0:
            p = _normalise(residual)
        q = q.clone()
        q[x] = 0.0
        q = _normalise(q)  # all zero once the drafts exhaust q's support; later x are skipped
    return _sample(p, generator)


def accept_sampling_rrs(
    tree: DraftTree,
    target_probs: torch.Tensor,  # [n, V]
    draft_probs: torch.Tensor,  # [D, V], row d = q of the tokens at depth d+1
    generator: torch.Generator,
) -> AcceptResult:
    """Recursive rejection sampling over each sibling group, walking down the accepted child.

    Lossless only if every sibling group was drawn without replacement from draft_probs of its
    depth, independently of the rest of the tree, into a shape fixed in advance: exactly what
    `resample_children` produces (NOT the deterministic top-W tree of `build_tree`). Then the token
    picked at a node is ~ target row (see rrs_pick), and moving into the child carrying it keeps
    the child's subtree an independent draft for the next position, so by induction on depth the
    committed tokens follow the target's autoregressive distribution.
    """
    _check_rows(tree, target_probs, "target_probs")
    if draft_probs.dim() != 2 or draft_probs.shape[1] != target_probs.shape[1]:
        raise ValueError(
            f"draft_probs has shape {tuple(draft_probs.shape)}, expected [D, V = {target_probs.shape[1]}]"
        )
    depths = tree.depths.tolist()

    def pick(node: int, child_tokens: list[int]) -> int:
        if not child_tokens:  # leaf: nothing to accept, the bonus is a plain target sample
            return _sample(target_probs[node], generator)
        if depths[node] >= draft_probs.shape[0]:
            raise ValueError(
                f"node {node} at depth {depths[node]} has children but draft_probs has only "
                f"{draft_probs.shape[0]} rows"
            )
        return rrs_pick(target_probs[node], draft_probs[depths[node]], child_tokens, generator)

    return _walk(tree, pick)


def split_rows(trees: list[DraftTree], rows: torch.Tensor) -> list[torch.Tensor]:
    """Cut rows stacked over a batch ([sum of n, V], trees in order) into per-tree [n_b, V] views."""
    sizes = [t.n for t in trees]
    if rows.dim() != 2 or rows.shape[0] != sum(sizes):
        raise ValueError(
            f"stacked rows have shape {tuple(rows.shape)}, expected [{sum(sizes)} = sum of n, V]"
        )
    return list(rows.split(sizes))


def accept_greedy_batch(trees: list[DraftTree], target_logits: torch.Tensor) -> list[AcceptResult]:
    """accept_greedy per request; target_logits [sum of n, V] stacked in tree order."""
    return [accept_greedy(t, r) for t, r in zip(trees, split_rows(trees, target_logits))]


def accept_sampling_rrs_batch(
    trees: list[DraftTree],
    target_probs: torch.Tensor,  # [sum of n, V]
    draft_probs: torch.Tensor,  # [b, D, V]
    generator: torch.Generator,
) -> list[AcceptResult]:
    """accept_sampling_rrs per request, one shared generator consumed in tree order."""
    if draft_probs.dim() != 3 or draft_probs.shape[0] != len(trees):
        raise ValueError(
            f"draft_probs has shape {tuple(draft_probs.shape)}, expected [b = {len(trees)}, D, V]"
        )
    rows = split_rows(trees, target_probs)
    return [accept_sampling_rrs(t, r, q, generator) for t, r, q in zip(trees, rows, draft_probs)]
