"""Draft trees in SGLang's tree-verify layout (the format its verify kernels read).

Semantics verified against SGLang 0.5.23 (site-packages/sglang):

* Node order. SGLang needs TOPOLOGICAL order only, not BFS: the NGRAM worker
  (srt/speculative/ngram_worker.py, `_prepare_for_speculative_decoding`) hands a per-request
  n x n ancestor mask to `reconstruct_indices_from_tree_mask`
  (kernels/ops/speculative/reconstruct_tree.py documents the contract), which takes a node's
  parent to be its LARGEST-index strict ancestor and its depth to be the number of strict
  ancestors. Both are right whenever parents[i] < i, which `DraftTree` guarantees, so no
  reordering is needed (hence no `to_bfs_order`).
* tree mask: mask[b, i, j] True iff j is i or an ancestor of i (the root column is True in
  every row, the diagonal is True). Row-major, per request. Two flat formats
  (kernels/ops/speculative/spec_tree.py `TreeMaskMode`, eagle_utils.py
  `build_tree_kernel_efficient`):
  - FULL_MASK (GPU backends): per request an n x (prefix_len + n) block, prefix columns all
    True, then the n x n tree mask; blocks concatenated over the batch (the triton backend
    indexes them with mask_indptr = cumsum(n * (seq_len + n))). `full_custom_mask`.
  - QLEN_ONLY (CPU intel_amx backend): per request only the n x n tree mask. `qlen_custom_mask`.
* positions[b * n + i] = prefix_len[b] + depth[i]; prefix_len is the number of tokens already in
  the KV cache, i.e. excluding the root, whose KV the verify forward writes.
* retrieve_index[b, i] = b * n + i: a GLOBAL row into the flattened [bs * n] verify batch. The
  greedy verify indexes target_predict [bs, n] with it as (idx // n, idx % n).
* retrieve_next_token[b, i] = smallest-index child of i, else -1.
  retrieve_next_sibling[b, i] = smallest-index node k > i with the same parent, else -1
  (-1 for the root). Siblings are therefore visited in index order; `build_tree` stores
  siblings in rank order, so the best-ranked sibling is tried first.
* Greedy verify (`verify_tree_greedy_func` in spec_tree.py, its Triton kernel
  `verify_tree_greedy_kernel_triton` states the same walk as the CUDA/CPU ops):
  accept_index[b, 0] = retrieve_index[b, 0]; cur = 0; last = retrieve_index[b, 0]. For
  j in 1 .. max_tree_depth - 1: cur = next_token[b, cur]; target = target_predict at `last`;
  scan cur, next_sibling[cur], ... for a candidate token equal to target; on a match accept
  it (accept_index[b, j] = retrieve_index[b, cur], last = that) and go on, else stop. The
  bonus token is target_predict at `last`. accept_index has max_tree_depth columns
  (eagle_info.py `max_tree_depth`: longest chain INCLUDING the root; NGRAM uses n), so a
  JetSpec worker must size it max_depth + 1 or more. `greedy_walk_with_layout` restates this.
* Trees of different sizes in one batch (per-request budgets): SGLang's verify needs the same
  n for every request, so `to_verify_layout(..., n=N)` pads a smaller tree with DEAD rows. A dead
  row is a node the walk can never reach: no node links to it (it is nobody's first child or
  next sibling), its own links are -1, its mask row sees the root and itself, its position is
  prefix_len + 1 and its token repeats the root's. Its target logits are computed and ignored,
  and its KV (written past the accepted path) is discarded like any rejected node's. Acceptance
  is therefore exactly that of the unpadded tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tree import DraftTree


@dataclass
class VerifyLayout:
    """A batch of same-size draft trees, flattened the way SGLang's verify reads them."""

    draft_tokens: torch.Tensor  # [bs * n] long, root first per request
    positions: torch.Tensor  # [bs * n] long = prefix_len + depth
    retrieve_index: torch.Tensor  # [bs, n] long = b * n + i
    retrieve_next_token: torch.Tensor  # [bs, n] long, first child or -1
    retrieve_next_sibling: torch.Tensor  # [bs, n] long, next sibling or -1
    tree_mask: torch.Tensor  # [bs, n, n] bool, ancestor-or-self

    @property
    def bs(self) -> int:
        return int(self.retrieve_index.shape[0])

    @property
    def n(self) -> int:
        return int(self.retrieve_index.shape[1])


def _prefix_list(prefix_lens: list[int] | torch.Tensor, bs: int) -> list[int]:
    lens = prefix_lens.tolist() if isinstance(prefix_lens, torch.Tensor) else list(prefix_lens)
    if len(lens) != bs:
        raise ValueError(f"got {len(lens)} prefix_lens for a batch of {bs} trees")
    if any(p < 0 for p in lens):
        raise ValueError(f"prefix_lens {lens} must all be >= 0")
    return [int(p) for p in lens]


def _links(parents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first child, next sibling) per node from a topological parent array, -1 for none."""
    n = parents.shape[0]
    device = parents.device
    nodes = torch.arange(1, n, device=device)  # every non-root node is somebody's child
    par = parents[1:]
    next_token = torch.full((n,), n, dtype=torch.long, device=device)
    next_token.scatter_reduce_(0, par, nodes, reduce="amin")
    next_token[next_token == n] = -1
    # siblings in index order: sort children by (parent, index), link neighbours with equal parent
    order = torch.argsort(par * n + nodes)
    kids, kid_par = nodes[order], par[order]
    same = kid_par[:-1] == kid_par[1:]
    next_sibling = torch.full((n,), -1, dtype=torch.long, device=device)
    next_sibling[kids[:-1][same]] = kids[1:][same]
    return next_token, next_sibling


def to_verify_layout(trees: list[DraftTree], prefix_lens: list[int] | torch.Tensor,
                     n: int | None = None) -> VerifyLayout:
    """Flatten a batch of draft trees into SGLang's layout, n rows per request.

    Without `n` every tree must have the same node count. With `n`, trees of at most n nodes
    are padded with dead rows (module docstring) so each request keeps its own budget.
    """
    if not trees:
        raise ValueError("to_verify_layout needs at least one tree")
    sizes = [t.n for t in trees]
    if n is None:
        n = sizes[0]
        if any(s != n for s in sizes):
            raise ValueError(f"all trees in a verify batch must have the same node count, got {sizes} "
                             "(pass n to pad smaller trees)")
    elif max(sizes) > n:
        raise ValueError(f"tree sizes {sizes} exceed the verify width n = {n}")
    lens = _prefix_list(prefix_lens, len(trees))
    device = trees[0].tokens.device

    tokens, positions, next_tok, next_sib, masks = [], [], [], [], []
    for tree, prefix in zip(trees, lens):
        k = tree.n
        if k > 1 and bool((tree.parents[1:] >= torch.arange(1, k, device=device)).any()):
            raise ValueError("tree nodes must be in topological order (parents[i] < i)")
        first_child, sibling = _links(tree.parents.long())
        mask = torch.zeros(n, n, dtype=torch.bool, device=device)
        mask[:k, :k] = tree.ancestor_mask()
        dead = torch.arange(k, n, device=device)
        mask[dead, 0] = True
        mask[dead, dead] = True
        pad = n - k
        tokens.append(torch.cat([tree.tokens.long(), tree.tokens[:1].long().expand(pad)]))
        positions.append(torch.cat([tree.depths.long(),
                                    torch.ones(pad, dtype=torch.long, device=device)]) + prefix)
        none = torch.full((pad,), -1, dtype=torch.long, device=device)
        next_tok.append(torch.cat([first_child, none]))
        next_sib.append(torch.cat([sibling, none]))
        masks.append(mask)

    bs = len(trees)
    return VerifyLayout(
        draft_tokens=torch.cat(tokens),
        positions=torch.cat(positions),
        retrieve_index=torch.arange(bs * n, dtype=torch.long, device=device).view(bs, n),
        retrieve_next_token=torch.stack(next_tok),
        retrieve_next_sibling=torch.stack(next_sib),
        tree_mask=torch.stack(masks),
    )


def full_custom_mask(layout: VerifyLayout, prefix_lens: list[int] | torch.Tensor) -> torch.Tensor:
    """Flat bool mask in SGLang's FULL_MASK format: per request n x (prefix_len + n), row-major."""
    lens = _prefix_list(prefix_lens, layout.bs)
    n = layout.n
    blocks = []
    for b, prefix in enumerate(lens):
        prefix_cols = torch.ones(n, prefix, dtype=torch.bool, device=layout.tree_mask.device)
        blocks.append(torch.cat([prefix_cols, layout.tree_mask[b]], dim=1).flatten())  # [n * (prefix + n)]
    return torch.cat(blocks)


def qlen_custom_mask(layout: VerifyLayout) -> torch.Tensor:
    """Flat bool mask in SGLang's QLEN_ONLY format: per request the n x n tree mask."""
    return layout.tree_mask.flatten()


def greedy_walk_with_layout(
    layout: VerifyLayout,
    target_argmax: torch.Tensor,  # [bs, n] target argmax at every node
    max_tree_depth: int | None = None,
) -> tuple[list[list[int]], list[int]]:
    """SGLang's greedy tree verify, restated in plain python over the layout's links.

    Returns, per request, the accepted node indices (root first, local to the request) and
    the bonus token (target argmax at the last accepted node). max_tree_depth bounds the
    accepted chain including the root, like accept_index's width (default n, as NGRAM).
    """
    bs, n = layout.bs, layout.n
    if tuple(target_argmax.shape) != (bs, n):
        raise ValueError(f"target_argmax shape {tuple(target_argmax.shape)} must be [bs, n] = [{bs}, {n}]")
    steps = n if max_tree_depth is None else max_tree_depth
    if steps < 1:
        raise ValueError(f"max_tree_depth {steps} must be >= 1")
    target = target_argmax.reshape(-1).tolist()  # indexed by global row, as the kernel does
    cand = layout.draft_tokens.view(bs, n).tolist()
    ridx = layout.retrieve_index.tolist()
    nxt, sib = layout.retrieve_next_token.tolist(), layout.retrieve_next_sibling.tolist()

    accepted, bonus = [], []
    for b in range(bs):
        rows = walk_links(cand[b], ridx[b], nxt[b], sib[b], target, steps)
        accepted.append([r - b * n for r in rows])
        bonus.append(target[rows[-1]])
    return accepted, bonus


def walk_links(cand: list[int], ridx: list[int], nxt: list[int], sib: list[int], target: list[int],
               steps: int) -> list[int]:
    """One request's greedy walk over SGLang's links (plain lists): from the root, follow the
    child whose token equals the target at the current node, scanning siblings in link order.
    Returns the GLOBAL rows (ridx values) of the accepted path, root first, at most ``steps``."""
    path = [ridx[0]]
    cur = 0
    for _ in range(1, steps):
        cur = nxt[cur]
        want = target[path[-1]]
        while cur != -1 and cand[cur] != want:
            cur = sib[cur]
        if cur == -1:
            break
        path.append(ridx[cur])
    return path
