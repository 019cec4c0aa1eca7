"""Draft tree construction: invariants and brute-force equivalence on random log-probs."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from sglang_jetspec.core.tree import DraftTree, build_tree, build_trees, resample_children

FAST = settings(max_examples=80, deadline=None)


def random_logprobs(seed: int, depth: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(3.0 * torch.randn(depth, vocab, generator=g), dim=-1)  # [D, V]


def brute_force_paths(logprobs: torch.Tensor, budget: int, width: int, max_depth: int) -> set:
    """Token paths of the budget-1 best nodes of the full W-ary candidate tree."""
    w = min(width, logprobs.shape[1])
    vals, ids = logprobs.topk(w, dim=-1)
    cands = []
    for d in range(1, max_depth + 1):
        for ranks in itertools.product(range(w), repeat=d):
            score = sum(float(vals[k, r]) for k, r in enumerate(ranks))
            cands.append((score, tuple(int(ids[k, r]) for k, r in enumerate(ranks))))
    cands.sort(key=lambda c: -c[0])
    return {path for _, path in cands[: budget - 1]}, len(cands)


def tree_paths(tree: DraftTree) -> set:
    toks = tree.tokens.tolist()
    return {tuple(toks[j] for j in tree.path_to(i)[1:]) for i in range(1, tree.n)}


tree_args = st.tuples(
    st.integers(0, 10_000),  # seed
    st.integers(1, 4),  # D
    st.integers(1, 6),  # V
    st.integers(1, 40),  # budget
    st.integers(1, 3),  # width
    st.integers(0, 3),  # max_depth shortening
)


@FAST
@given(tree_args)
def test_tree_matches_brute_force(args):
    seed, depth, vocab, budget, width, cut = args
    max_depth = max(1, depth - cut)
    lp = random_logprobs(seed, depth, vocab)
    tree = build_tree(7, lp, budget, width, max_depth)
    tree.validate()

    want, total = brute_force_paths(lp, budget, width, max_depth)
    assert tree.n == min(budget, 1 + total)
    assert tree_paths(tree) == want
    assert int(tree.tokens[0]) == 7

    parents, depths, toks = tree.parents.tolist(), tree.depths.tolist(), tree.tokens.tolist()
    assert parents[0] == -1 and all(0 <= parents[i] < i for i in range(1, tree.n))
    assert all(depths[i] == depths[parents[i]] + 1 for i in range(1, tree.n))
    assert max(depths) <= max_depth
    # scores are cumulative sums of the per-depth log-probs along the path
    for i in range(tree.n):
        path = tree.path_to(i)
        expect = sum(float(lp[depths[j] - 1, toks[j]]) for j in path[1:])
        assert float(tree.scores[i]) == pytest.approx(expect, abs=1e-5)
    # ranks index the per-depth top-W list; siblings come in rank order
    top_ids = lp.topk(min(width, vocab), dim=-1).indices
    for i in range(1, tree.n):
        assert toks[i] == int(top_ids[depths[i] - 1, int(tree.ranks[i])])
    for kids in tree.children():
        assert [int(tree.ranks[c]) for c in kids] == list(range(len(kids)))


@FAST
@given(tree_args)
def test_ancestor_mask_matches_parents(args):
    seed, depth, vocab, budget, width, _ = args
    tree = build_tree(0, random_logprobs(seed, depth, vocab), budget, width)
    mask = tree.ancestor_mask()
    brute = torch.zeros(tree.n, tree.n, dtype=torch.bool)
    for i in range(tree.n):
        brute[i, tree.path_to(i)] = True
    assert torch.equal(mask, brute)


def test_budget_one_is_root_only():
    tree = build_tree(42, random_logprobs(0, 5, 10), budget=1, width=4)
    tree.validate()
    assert tree.n == 1 and tree.tokens.tolist() == [42] and tree.parents.tolist() == [-1]
    assert tree.ancestor_mask().tolist() == [[True]]
    assert tree.children() == [[]]


@pytest.mark.parametrize("budget", [1, 2, 4, 6, 10])
def test_width_one_is_argmax_chain(budget):
    lp = random_logprobs(3, 5, 11)
    tree = build_tree(1, lp, budget, width=1)
    length = min(budget - 1, 5)
    assert tree.n == 1 + length
    assert tree.tokens[1:].tolist() == lp.argmax(-1)[:length].tolist()
    assert tree.parents.tolist() == list(range(-1, length))


def test_width_clipped_to_vocab_and_pop_order_by_score():
    lp = random_logprobs(5, 3, 2)
    tree = build_tree(0, lp, budget=100, width=9)
    assert tree.n == 1 + 2 + 4 + 8  # full binary tree of depth 3
    # best-first: a node never scores above an earlier popped node
    s = tree.scores.tolist()
    assert all(s[i] >= s[i + 1] - 1e-6 for i in range(1, tree.n - 1))


def test_build_trees_batch_matches_single():
    lp = torch.stack([random_logprobs(s, 4, 9) for s in range(3)])  # [3, 4, 9]
    roots = torch.tensor([5, 6, 7])
    trees = build_trees(roots, lp, budget=9, width=3, max_depth=3)
    for b, t in enumerate(trees):
        ref = build_tree(int(roots[b]), lp[b], 9, 3, 3)
        assert torch.equal(t.tokens, ref.tokens) and torch.equal(t.parents, ref.parents)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(budget=0), "budget 0"),
        (dict(width=0), "width 0"),
        (dict(max_depth=0), "max_depth 0"),
        (dict(max_depth=5), "max_depth 5"),
        (dict(root_token=-1), "root_token -1"),
        (dict(draft_logprobs=torch.zeros(3)), "2-D float"),
        (dict(draft_logprobs=torch.zeros(2, 3, dtype=torch.long)), "2-D float"),
        (dict(draft_logprobs=torch.ones(2, 3)), "log_softmax"),
    ],
)
def test_build_tree_rejects_bad_inputs(kwargs, msg):
    args = dict(root_token=0, draft_logprobs=random_logprobs(0, 4, 5), budget=4, width=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        build_tree(**args)


def test_validate_catches_broken_trees():
    good = build_tree(0, random_logprobs(1, 3, 6), budget=8, width=2)
    good.validate()
    bad_parent = DraftTree(good.tokens, good.parents.clone(), good.depths, good.scores, good.ranks)
    bad_parent.parents[3] = 5
    with pytest.raises(ValueError, match="parents"):
        bad_parent.validate()
    bad_depth = DraftTree(good.tokens, good.parents, good.depths + 1, good.scores, good.ranks)
    with pytest.raises(ValueError, match="depth"):
        bad_depth.validate()
    bad_rank = DraftTree(good.tokens, good.parents, good.depths, good.scores, torch.zeros_like(good.ranks))
    with pytest.raises(ValueError, match="ranks"):
        bad_rank.validate()
    dup = good.tokens.clone()
    kids = good.children()[0]
    dup[kids[1]] = dup[kids[0]]
    with pytest.raises(ValueError, match="repeat a token"):
        DraftTree(dup, good.parents, good.depths, good.scores, good.ranks).validate()


# ---- resampling for lossless sampling ----


def two_level_tree(k_root: int, k_child: int) -> DraftTree:
    """Root with k_root children, each with k_child children (tokens are placeholders)."""
    parents, depths, ranks = [-1], [0], [0]
    for r in range(k_root):
        parents.append(0), depths.append(1), ranks.append(r)
    for p in range(1, k_root + 1):
        for r in range(k_child):
            parents.append(p), depths.append(2), ranks.append(r)
    n = len(parents)
    toks = [0] + [r for r in ranks[1:]]
    return DraftTree(
        torch.tensor(toks), torch.tensor(parents), torch.tensor(depths), torch.zeros(n), torch.tensor(ranks)
    )


@FAST
@given(tree_args)
def test_resample_keeps_shape(args):
    seed, depth, vocab, budget, width, _ = args
    lp = random_logprobs(seed, depth, vocab)
    tree = build_tree(3, lp, budget, width)
    probs = lp.exp()  # all entries > 0, so any width <= V is drawable
    g = torch.Generator().manual_seed(seed)
    new = resample_children(tree, probs, g)
    new.validate()  # includes: siblings have distinct tokens
    for name in ("parents", "depths", "ranks"):
        assert torch.equal(getattr(new, name), getattr(tree, name))
    assert int(new.tokens[0]) == 3
    toks, depths = new.tokens.tolist(), new.depths.tolist()
    for i in range(new.n):
        expect = sum(float(lp[depths[j] - 1, toks[j]]) for j in new.path_to(i)[1:])
        assert float(new.scores[i]) == pytest.approx(expect, abs=1e-4)


def test_resample_draws_follow_without_replacement_law():
    probs = torch.tensor(
        [[0.05, 0.1, 0.15, 0.2, 0.2, 0.3], [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]]
    )  # [D=2, V=6]
    tree = two_level_tree(k_root=4, k_child=2)
    g = torch.Generator().manual_seed(1234)
    pairs = torch.zeros(6, 6)  # counts of (first, second) drawn from row 1
    first_root = torch.zeros(6)  # rank-0 child of the root, drawn from row 0
    for _ in range(2500):
        toks = resample_children(tree, probs, g).tokens
        first_root[toks[1]] += 1
        for p in range(4):
            a, b = toks[5 + 2 * p], toks[6 + 2 * p]
            pairs[a, b] += 1

    n_root = float(first_root.sum())
    assert chisquare(first_root.numpy(), (n_root * probs[0]).numpy()).pvalue > 1e-3

    q = probs[1]
    joint = q[:, None] * q[None, :] / (1 - q[:, None])  # P(first=i, second=j), i != j
    joint.fill_diagonal_(0)
    assert pairs.diagonal().sum() == 0  # without replacement
    off = ~torch.eye(6, dtype=torch.bool)
    n_pairs = float(pairs.sum())
    assert chisquare(pairs[off].numpy(), (n_pairs * joint[off]).numpy()).pvalue > 1e-3
    second = pairs.sum(0)
    assert chisquare(second.numpy(), (n_pairs * joint.sum(0)).numpy()).pvalue > 1e-3
    # the second draw is not distributed like the first (teeth: with-replacement law differs)
    assert chisquare(second.numpy(), (n_pairs * q).numpy()).pvalue < 1e-3


def test_resample_on_a_sparse_support_keeps_the_law():
    """Columns no group can draw (a draft vocabulary) are skipped before the Gumbel draws: the
    draws land on the support only and keep the without-replacement law there."""
    dense = torch.tensor([[0.05, 0.1, 0.15, 0.2, 0.2, 0.3], [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]])
    cols = torch.tensor([0, 2, 3, 5, 7, 9])
    probs = torch.zeros(2, 16)  # 6 of 16 columns: the narrow path
    probs[:, cols] = dense
    tree = two_level_tree(k_root=4, k_child=2)
    g = torch.Generator().manual_seed(99)
    back = {int(c): i for i, c in enumerate(cols)}
    first_root, pairs = torch.zeros(6), torch.zeros(6, 6)
    for _ in range(2500):
        toks = resample_children(tree, probs, g).tokens.tolist()
        assert all(t in back for t in toks[1:])
        first_root[back[toks[1]]] += 1
        for p in range(4):
            pairs[back[toks[5 + 2 * p]], back[toks[6 + 2 * p]]] += 1
    assert chisquare(first_root.numpy(), (first_root.sum() * dense[0]).numpy()).pvalue > 1e-3
    q = dense[1]
    joint = q[:, None] * q[None, :] / (1 - q[:, None])
    off = ~torch.eye(6, dtype=torch.bool)
    assert pairs.diagonal().sum() == 0
    assert chisquare(pairs[off].numpy(), (pairs.sum() * joint[off]).numpy()).pvalue > 1e-3


def test_resample_rejects_short_support():
    tree = two_level_tree(k_root=3, k_child=1)
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    with pytest.raises(ValueError, match="only 2 nonzero"):
        resample_children(tree, probs, torch.Generator().manual_seed(0))


def test_resample_zero_probability_tokens_never_drawn():
    tree = two_level_tree(k_root=2, k_child=2)
    probs = torch.tensor([[0.0, 0.7, 0.0, 0.3], [0.2, 0.0, 0.8, 0.0]])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        toks = resample_children(tree, probs, g).tokens.tolist()
        assert sorted(toks[1:3]) == [1, 3] and all(sorted(toks[3 + 2 * p : 5 + 2 * p]) == [0, 2] for p in range(2))


def test_a_tree_never_needs_rows_deeper_than_its_budget_minus_one():
    """The worker drafts only min(depth, budget - 1) rows: the tree must be the same."""
    for seed in range(20):
        lp = random_logprobs(seed, 8, 30)
        for budget in (1, 2, 3, 5, 9):
            for width in (1, 3):
                full = build_tree(0, lp, budget, width)
                rows = max(1, min(8, budget - 1))
                short = build_tree(0, lp[:rows], budget, width, max_depth=rows)
                assert torch.equal(full.tokens, short.tokens) and torch.equal(full.parents, short.parents), (seed, budget, width)
