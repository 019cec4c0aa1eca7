"""SGLang tree-verify layout: links, mask, positions, batch offsets and the greedy walk.

The oracle test at the bottom runs SGLang's own Triton kernels (the reconstruct-from-mask and
greedy-verify kernels) in the Triton CPU interpreter in a subprocess, so the layout is checked
against the real consumer, not only against our reading of it.
"""

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_jetspec.core.tree import DraftTree, build_tree
from sglang_jetspec.core.verify_layout import (
    full_custom_mask,
    greedy_walk_with_layout,
    qlen_custom_mask,
    to_verify_layout,
)

FAST = settings(max_examples=60, deadline=None)


def random_parent_tree(g: torch.Generator, n: int, vocab: int) -> DraftTree:
    """Any topological tree: parents[i] uniform in [0, i), distinct tokens among siblings."""
    parents, depths, ranks, tokens = [-1], [0], [0], [int(torch.randint(vocab, (1,), generator=g))]
    used: dict[int, list[int]] = {}
    for i in range(1, n):
        p = int(torch.randint(i, (1,), generator=g))
        sib = used.setdefault(p, [])
        free = [t for t in torch.randperm(vocab, generator=g).tolist() if t not in sib]
        if not free:  # parent is full: hang the node under the root's first child chain end
            p = i - 1
            sib = used.setdefault(p, [])
            free = [t for t in range(vocab) if t not in sib]
        parents.append(p), depths.append(depths[p] + 1), ranks.append(len(sib)), tokens.append(free[0])
        sib.append(free[0])
    return DraftTree(
        torch.tensor(tokens), torch.tensor(parents), torch.tensor(depths), torch.zeros(n), torch.tensor(ranks)
    )


def random_batch(seed: int, bs: int, n: int, vocab: int) -> list[DraftTree]:
    """Half best-first JetSpec trees, half arbitrary-shape trees, all with n nodes."""
    g = torch.Generator().manual_seed(seed)
    trees = []
    for b in range(bs):
        if b % 2 == 0:
            lp = torch.log_softmax(2.0 * torch.randn(n, vocab, generator=g), -1)  # enough nodes for any n
            trees.append(build_tree(int(torch.randint(vocab, (1,), generator=g)), lp, n, width=3))
        else:
            trees.append(random_parent_tree(g, n, vocab))
        trees[-1].validate()
        assert trees[-1].n == n
    return trees


def direct_walk(tree: DraftTree, target: list[int], cap: int) -> list[int]:
    """Greedy acceptance on the tree itself: follow the child whose token is the target's."""
    kids, toks = tree.children(), tree.tokens.tolist()
    path = [0]
    while len(path) < cap:
        match = [c for c in kids[path[-1]] if toks[c] == target[path[-1]]]
        if not match:
            break
        path.append(match[0])
    return path


def agreeing_target(g: torch.Generator, trees: list[DraftTree], vocab: int, n: int | None = None) -> torch.Tensor:
    """Random target argmax [bs, n] that follows one random root-to-node path per tree (trees of
    up to n nodes; n defaults to the first tree's size)."""
    n = trees[0].n if n is None else n
    target = torch.randint(vocab, (len(trees), n), generator=g)
    for b, tree in enumerate(trees):
        path = tree.path_to(int(torch.randint(tree.n, (1,), generator=g)))
        for u, v in zip(path[:-1], path[1:]):
            target[b, u] = tree.tokens[v]
    return target


batch_args = st.tuples(st.integers(0, 10_000), st.integers(1, 4), st.integers(1, 24), st.integers(3, 8))


@FAST
@given(batch_args)
def test_greedy_walk_matches_direct_walk(args):
    seed, bs, n, vocab = args
    trees = random_batch(seed, bs, n, vocab)
    layout = to_verify_layout(trees, [seed % 7] * bs)
    g = torch.Generator().manual_seed(seed + 1)
    target = agreeing_target(g, trees, vocab)
    for cap in (None, 1, 3):
        accepted, bonus = greedy_walk_with_layout(layout, target, max_tree_depth=cap)
        for b, tree in enumerate(trees):
            want = direct_walk(tree, target[b].tolist(), n if cap is None else cap)
            assert accepted[b] == want
            assert bonus[b] == int(target[b, want[-1]])


def test_greedy_walk_follows_the_planted_path_to_its_end():
    trees = random_batch(5, 3, 20, 6)
    layout = to_verify_layout(trees, [0, 0, 0])
    for b, tree in enumerate(trees):
        deepest = int(tree.depths.argmax())
        path = tree.path_to(deepest)
        target = torch.full((3, 20), 99)  # 99 matches no draft token
        for u, v in zip(path[:-1], path[1:]):
            target[b, u] = tree.tokens[v]
        target[b, deepest] = 123
        accepted, bonus = greedy_walk_with_layout(layout, target)
        assert accepted[b] == path and bonus[b] == 123
        others = [c for c in range(3) if c != b]
        assert all(accepted[c] == [0] and bonus[c] == 99 for c in others)


def rederive_from_mask(mask: torch.Tensor, prefix: int):
    """SGLang's reconstruct_indices_from_tree_mask contract (reconstruct_tree.py docstring)."""
    n = mask.shape[0]
    anc = [[bool(mask[i, j]) and j < i for j in range(n)] for i in range(n)]
    parent = [max((j for j in range(i) if anc[i][j]), default=-1) for i in range(n)]
    positions = [prefix + sum(anc[i]) for i in range(n)]
    first_child = [min((k for k in range(t + 1, n) if anc[k][t]), default=-1) for t in range(n)]
    sibling = [
        -1 if parent[t] < 0 else min((k for k in range(t + 1, n) if parent[k] == parent[t]), default=-1)
        for t in range(n)
    ]
    return positions, first_child, sibling


@FAST
@given(batch_args)
def test_layout_fields(args):
    seed, bs, n, vocab = args
    trees = random_batch(seed, bs, n, vocab)
    prefix = [(seed + 3 * b) % 11 for b in range(bs)]
    layout = to_verify_layout(trees, torch.tensor(prefix))
    assert layout.draft_tokens.shape == (bs * n,) and layout.positions.shape == (bs * n,)
    assert layout.tree_mask.shape == (bs, n, n) and layout.tree_mask.dtype == torch.bool
    for name in ("draft_tokens", "positions", "retrieve_index", "retrieve_next_token", "retrieve_next_sibling"):
        assert getattr(layout, name).dtype == torch.long
    for b, tree in enumerate(trees):
        rows = slice(b * n, (b + 1) * n)
        assert torch.equal(layout.draft_tokens[rows], tree.tokens)
        assert torch.equal(layout.positions[rows], tree.depths + prefix[b])
        assert layout.retrieve_index[b].tolist() == list(range(b * n, (b + 1) * n))  # global rows
        assert torch.equal(layout.tree_mask[b], tree.ancestor_mask())
        assert bool(layout.tree_mask[b][:, 0].all()) and bool(layout.tree_mask[b].diagonal().all())
        positions, first_child, sibling = rederive_from_mask(layout.tree_mask[b], prefix[b])
        assert layout.positions[rows].tolist() == positions
        assert layout.retrieve_next_token[b].tolist() == first_child
        assert layout.retrieve_next_sibling[b].tolist() == sibling
        # links agree with the tree's own children lists (build_tree: index order == rank order)
        for u, kids in enumerate(tree.children()):
            chain, c = [], int(layout.retrieve_next_token[b, u])
            while c != -1:
                chain.append(c)
                c = int(layout.retrieve_next_sibling[b, c])
            assert chain == sorted(kids)


def test_full_and_qlen_masks():
    trees = random_batch(11, 3, 9, 5)
    prefix = [4, 0, 7]
    layout = to_verify_layout(trees, prefix)
    flat = full_custom_mask(layout, prefix)
    n = 9
    seq_mask_len = [n * (p + n) for p in prefix]  # triton_backend: n * (seq_len + n) per request
    assert flat.dtype == torch.bool and flat.numel() == sum(seq_mask_len)
    start = 0
    for b, p in enumerate(prefix):
        block = flat[start : start + seq_mask_len[b]].view(n, p + n)
        assert bool(block[:, :p].all())
        assert torch.equal(block[:, p:], trees[b].ancestor_mask())
        start += seq_mask_len[b]
    q = qlen_custom_mask(layout)
    assert torch.equal(q.view(3, n, n), layout.tree_mask)


def test_root_only_trees():
    trees = [build_tree(t, torch.log_softmax(torch.randn(2, 5), -1), 1, 3) for t in (4, 2)]
    layout = to_verify_layout(trees, [5, 6])
    assert layout.draft_tokens.tolist() == [4, 2] and layout.positions.tolist() == [5, 6]
    assert layout.retrieve_index.tolist() == [[0], [1]]
    assert layout.retrieve_next_token.tolist() == [[-1], [-1]]
    accepted, bonus = greedy_walk_with_layout(layout, torch.tensor([[8], [9]]))
    assert accepted == [[0], [0]] and bonus == [8, 9]


def padded_batch(seed: int, bs: int, n: int, vocab: int) -> list[DraftTree]:
    """Trees of random sizes 1..n (per-request budgets), to be padded to n."""
    g = torch.Generator().manual_seed(seed)
    sizes = [int(torch.randint(1, n + 1, (1,), generator=g)) for _ in range(bs)]
    return [random_batch(seed + 17 * b, 1, k, vocab)[0] for b, k in enumerate(sizes)]


@FAST
@given(batch_args)
def test_padded_layout_accepts_exactly_the_unpadded_tree(args):
    seed, bs, n, vocab = args
    trees = padded_batch(seed, bs, n, vocab)
    prefix = [seed % 5 + b for b in range(bs)]
    layout = to_verify_layout(trees, prefix, n=n)
    assert layout.n == n and layout.draft_tokens.shape == (bs * n,)
    target = agreeing_target(torch.Generator().manual_seed(seed + 3), trees, vocab, n)
    for b, tree in enumerate(trees):
        k = tree.n
        # dead rows: nobody links to them, they link nowhere, they see the root and themselves
        nxt, sib = layout.retrieve_next_token[b], layout.retrieve_next_sibling[b]
        linked = set(nxt.tolist()) | set(sib.tolist())
        assert not linked & set(range(k, n))
        assert (nxt[k:] == -1).all() and (sib[k:] == -1).all()
        mask = layout.tree_mask[b]
        assert torch.equal(mask[:k, :k], tree.ancestor_mask()) and not mask[:k, k:].any()
        for r in range(k, n):
            assert mask[r].nonzero().flatten().tolist() == sorted({0, r})
        assert (layout.positions.view(bs, n)[b, k:] == prefix[b] + 1).all()
    accepted, bonus = greedy_walk_with_layout(layout, target)
    for b, tree in enumerate(trees):
        want = direct_walk(tree, target[b, : tree.n].tolist(), n)
        assert accepted[b] == want and bonus[b] == int(target[b, want[-1]])


def test_layout_rejects_bad_batches():
    lp = torch.log_softmax(torch.randn(3, 6), -1)
    a, b = build_tree(0, lp, 4, 2), build_tree(0, lp, 5, 2)
    with pytest.raises(ValueError, match=r"same node count, got \[4, 5\]"):
        to_verify_layout([a, b], [0, 0])
    with pytest.raises(ValueError, match=r"tree sizes \[4, 5\] exceed the verify width n = 4"):
        to_verify_layout([a, b], [0, 0], n=4)
    with pytest.raises(ValueError, match="got 1 prefix_lens for a batch of 2"):
        to_verify_layout([a, a], [0])
    with pytest.raises(ValueError, match=">= 0"):
        to_verify_layout([a], [-1])
    with pytest.raises(ValueError, match="at least one tree"):
        to_verify_layout([], [])
    bad = DraftTree(a.tokens, torch.tensor([-1, 0, 3, 1]), a.depths, a.scores, a.ranks)
    with pytest.raises(ValueError, match="topological"):
        to_verify_layout([bad], [0])
    layout = to_verify_layout([a], [0])
    with pytest.raises(ValueError, match=r"target_argmax shape \(4,\)"):
        greedy_walk_with_layout(layout, torch.zeros(4, dtype=torch.long))


# ---- oracle: SGLang's own Triton kernels, interpreted on CPU in a subprocess ----

SKIP_CODE = 77


def _run_sglang_oracle() -> None:
    """Compare our layout and walk with SGLang's reconstruct and greedy-verify kernels."""
    import types

    # sgl_kernel's compiled ops need a GPU; only the Triton kernels are used here.
    stub = types.ModuleType("sgl_kernel")
    stub.speculative = types.ModuleType("sgl_kernel.speculative")
    stub.speculative.reconstruct_indices_from_tree_mask = None
    sys.modules.setdefault("sgl_kernel", stub)
    sys.modules.setdefault("sgl_kernel.speculative", stub.speculative)
    try:
        from sglang.kernels.ops.speculative.reconstruct_tree import reconstruct_indices_from_tree_mask_triton
        from sglang.kernels.ops.speculative.spec_tree import verify_tree_greedy_triton
    except Exception as e:  # not installed or moved: nothing to compare against
        print(f"sglang Triton kernels unavailable: {e!r}")
        sys.exit(SKIP_CODE)

    for seed in range(12):
        bs, n, vocab = 1 + seed % 3, 2 + (seed * 5) % 11, 4 + seed % 3
        trees = random_batch(seed, bs, n, vocab)
        prefix = torch.tensor([(seed + b) % 5 for b in range(bs)])
        layout = to_verify_layout(trees, prefix)

        positions = torch.empty(bs * n, dtype=torch.long)
        ridx, nxt, sib = (torch.empty(bs, n, dtype=torch.long) for _ in range(3))
        reconstruct_indices_from_tree_mask_triton(qlen_custom_mask(layout), prefix, positions, ridx, nxt, sib, bs, n)
        assert torch.equal(positions, layout.positions), (seed, positions, layout.positions)
        assert torch.equal(ridx, layout.retrieve_index), (seed, ridx)
        assert torch.equal(nxt, layout.retrieve_next_token), (seed, nxt, layout.retrieve_next_token)
        assert torch.equal(sib, layout.retrieve_next_sibling), (seed, sib, layout.retrieve_next_sibling)

        target = agreeing_target(torch.Generator().manual_seed(seed), trees, vocab)
        # JetSpec's accept_index width is max depth + 1; smaller caps check the cut-off too
        depth_cap = max(1, max(int(t.depths.max()) for t in trees) + 1 - seed % 3)
        predicts = torch.zeros(bs * n, dtype=torch.int32)
        accept_index = torch.full((bs, depth_cap), -1, dtype=torch.int32)
        num_accepted = torch.empty(bs, dtype=torch.int32)
        verify_tree_greedy_triton(
            predicts, accept_index, num_accepted, layout.draft_tokens.view(bs, n),
            layout.retrieve_index, layout.retrieve_next_token, layout.retrieve_next_sibling, target,
        )
        accepted, bonus = greedy_walk_with_layout(layout, target, max_tree_depth=depth_cap)
        for b in range(bs):
            k = int(num_accepted[b])
            theirs = [int(x) - b * n for x in accept_index[b, : k + 1]]
            assert theirs == accepted[b], (seed, b, theirs, accepted[b])
            assert int(predicts[b * n + accepted[b][-1]]) == bonus[b], (seed, b)
    # per-request budgets: trees of different sizes padded with dead rows, SGLang's kernel
    # walking our links must accept exactly the unpadded tree's path
    for seed in range(12):
        bs, n, vocab = 1 + seed % 4, 3 + (seed * 7) % 13, 4 + seed % 3
        trees = padded_batch(seed, bs, n, vocab)
        layout = to_verify_layout(trees, [seed % 4] * bs, n=n)
        target = agreeing_target(torch.Generator().manual_seed(seed), trees, vocab, n)
        predicts = torch.zeros(bs * n, dtype=torch.int32)
        accept_index = torch.full((bs, n), -1, dtype=torch.int32)
        num_accepted = torch.empty(bs, dtype=torch.int32)
        verify_tree_greedy_triton(
            predicts, accept_index, num_accepted, layout.draft_tokens.view(bs, n),
            layout.retrieve_index, layout.retrieve_next_token, layout.retrieve_next_sibling, target,
        )
        for b, tree in enumerate(trees):
            want = direct_walk(tree, target[b, : tree.n].tolist(), n)
            k = int(num_accepted[b])
            theirs = [int(x) - b * n for x in accept_index[b, : k + 1]]
            assert theirs == want, ("padded", seed, b, theirs, want)
    print("ORACLE OK")


def test_layout_matches_sglang_triton_kernels():
    from subprocess_env import clean_env

    env = clean_env(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__)], env=env, capture_output=True, text=True, timeout=120
    )
    # sglang is pinned (0.5.23): kernels that no longer import mean the layout lost its oracle
    assert proc.returncode != SKIP_CODE, "SGLang's tree-verify kernels did not import: " + proc.stdout[-300:]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ORACLE OK" in proc.stdout


if __name__ == "__main__":
    _run_sglang_oracle()
