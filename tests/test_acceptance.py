"""Acceptance rules on known trees: exact answers for greedy, and the degenerate cases of rrs.

Distributional (losslessness) checks live in test_sampling_distribution.py; here every expected
value is deterministic: greedy by construction, sampling rules through one-hot target rows or
cases where the rule has only one possible outcome.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_jetspec.core.acceptance import (
    AcceptResult,
    accept_greedy,
    accept_greedy_batch,
    accept_sampling_rrs,
    accept_sampling_rrs_batch,
    accept_sampling_walk,
    rrs_pick,
    split_rows,
)
from sglang_jetspec.core.tree import DraftTree, build_tree

V = 10
FAST = settings(max_examples=60, deadline=None)


def make_tree(tokens: list[int], parents: list[int]) -> DraftTree:
    """Hand-built tree; siblings ranked in index order."""
    depths, ranks, seen = [0], [0], {}
    for i in range(1, len(tokens)):
        depths.append(depths[parents[i]] + 1)
        ranks.append(seen.get(parents[i], 0))
        seen[parents[i]] = ranks[-1] + 1
    tree = DraftTree(
        tokens=torch.tensor(tokens),
        parents=torch.tensor(parents),
        depths=torch.tensor(depths),
        scores=torch.zeros(len(tokens)),
        ranks=torch.tensor(ranks),
    )
    tree.validate()
    return tree


def argmax_rows(argmaxes: list[int]) -> torch.Tensor:  # [n, V] logits, row i peaks at argmaxes[i]
    rows = torch.randn(len(argmaxes), V, generator=torch.Generator().manual_seed(0))
    rows[torch.arange(len(argmaxes)), torch.tensor(argmaxes)] = 50.0
    return rows


def one_hot(argmaxes: list[int]) -> torch.Tensor:  # [n, V] probs
    return torch.nn.functional.one_hot(torch.tensor(argmaxes), V).float()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- greedy, hand-built
def test_greedy_root_only():
    res = accept_greedy(make_tree([7], [-1]), argmax_rows([3]))
    assert res == AcceptResult(accepted_nodes=[0], tokens=[3], bonus_token=3)
    assert res.num_accepted_drafts == 0


def test_greedy_chain_fully_accepted():
    tree = make_tree([9, 1, 2, 3], [-1, 0, 1, 2])
    res = accept_greedy(tree, argmax_rows([1, 2, 3, 4]))
    assert res.accepted_nodes == [0, 1, 2, 3]
    assert res.tokens == [1, 2, 3, 4] and res.bonus_token == 4
    assert res.num_accepted_drafts == 3


def test_greedy_second_sibling_matches():
    #        0(9)
    #      /      \
    #   1(5)      2(6)
    #    |          |
    #   3(1)      4(7)
    tree = make_tree([9, 5, 6, 1, 7], [-1, 0, 0, 1, 2])
    res = accept_greedy(tree, argmax_rows([6, 1, 7, 0, 8]))
    assert res.accepted_nodes == [0, 2, 4]
    assert res.tokens == [6, 7, 8] and res.bonus_token == 8


def test_greedy_stops_at_first_mismatch():
    tree = make_tree([9, 5, 6, 1], [-1, 0, 0, 1])
    res = accept_greedy(tree, argmax_rows([5, 2, 0, 0]))  # node 1's argmax 2 is not its child's 1
    assert res.accepted_nodes == [0, 1] and res.tokens == [5, 2] and res.bonus_token == 2
    res = accept_greedy(tree, argmax_rows([4, 1, 1, 1]))  # no root child matches
    assert res.accepted_nodes == [0] and res.tokens == [4]


# ---------------------------------------------------------------------------- random trees
def agreeing_case(seed: int, budget: int, width: int):
    """A build_tree tree, a random target node, and target logits whose argmax follows its path
    and then leaves the tree (bonus = a token that is none of the last node's children)."""
    g = gen(seed)
    lp = torch.log_softmax(torch.randn(4, V, generator=g), dim=-1)  # [D, V]
    tree = build_tree(int(torch.randint(V, (1,), generator=g)), lp, budget, width)
    last = int(torch.randint(tree.n, (1,), generator=g))
    path, toks, kids = tree.path_to(last), tree.tokens.tolist(), tree.children()
    argmaxes = torch.randint(V, (tree.n,), generator=g).tolist()
    for a, b in zip(path, path[1:]):
        argmaxes[a] = toks[b]
    free = [t for t in range(V) if t not in {toks[c] for c in kids[last]}]
    argmaxes[last] = free[int(torch.randint(len(free), (1,), generator=g))]
    return tree, path, argmaxes


@FAST
@given(st.integers(0, 10**6), st.integers(1, 30), st.integers(1, 4))
def test_greedy_follows_the_agreeing_path(seed, budget, width):
    tree, path, argmaxes = agreeing_case(seed, budget, width)
    res = accept_greedy(tree, argmax_rows(argmaxes))
    assert res.accepted_nodes == path
    assert res.tokens == tree.tokens[path[1:]].tolist() + [argmaxes[path[-1]]]
    assert res.bonus_token == argmaxes[path[-1]]


@FAST
@given(st.integers(0, 10**6), st.integers(1, 30), st.integers(1, 4))
def test_sampling_rules_with_one_hot_target_follow_the_path(seed, budget, width):
    """A one-hot target leaves a lossless rule no choice: both must reproduce greedy."""
    tree, path, argmaxes = agreeing_case(seed, budget, width)
    q = torch.softmax(torch.randn(4, V, generator=gen(seed)), dim=-1)  # [D, V], any q
    expected = accept_greedy(tree, argmax_rows(argmaxes))
    assert accept_sampling_walk(tree, one_hot(argmaxes), gen(seed)) == expected
    assert accept_sampling_rrs(tree, one_hot(argmaxes), q, gen(seed)) == expected


def test_batch_wrappers_match_per_tree_calls():
    cases = [agreeing_case(s, 12, 3) for s in range(4)]
    trees = [c[0] for c in cases]
    logits = torch.cat([argmax_rows(c[2]) for c in cases])  # [sum n, V]
    expected = [accept_greedy(t, argmax_rows(c[2])) for t, c in zip(trees, cases)]
    assert accept_greedy_batch(trees, logits) == expected
    probs = torch.cat([one_hot(c[2]) for c in cases])
    q = torch.full((len(trees), 4, V), 1.0 / V)
    got = accept_sampling_rrs_batch(trees, probs, q, gen())
    assert [r.accepted_nodes for r in got] == [c[1] for c in cases]
    with pytest.raises(ValueError, match="sum of n"):
        split_rows(trees, logits[1:])


# ---------------------------------------------------------------------------- rrs degenerate cases
def test_rrs_pick_accepts_first_draft_when_p_equals_q():
    """p == q: min(1, p/q) = 1, so the first draft is always accepted (no Z = 0 residual needed)."""
    p = torch.softmax(torch.randn(V, generator=gen(1)), dim=-1)
    assert {rrs_pick(p, p.clone(), [3, 7], gen(s)) for s in range(50)} == {3}


def test_rrs_pick_skips_a_draft_with_zero_draft_probability():
    p = torch.zeros(V)
    p[1] = 1.0
    q = torch.zeros(V)
    q[0] = 1.0
    # q(2) = 0: 2 cannot be a draw from q; accepting it (p/q = 0/0 or inf) would be wrong
    assert {rrs_pick(p, q, [2], gen(s)) for s in range(20)} == {1}
    # q(4) = 0 and p(4) = 1: skipped as a draft, but the residual still returns it
    assert {rrs_pick(one_hot([4])[0], q, [4], gen(s)) for s in range(20)} == {4}


def test_rrs_never_returns_a_token_the_target_excludes():
    p = torch.tensor([0.0, 0.0, 0.5, 0.5] + [0.0] * (V - 4))
    q = torch.tensor([0.45, 0.45] + [0.1 / (V - 2)] * (V - 2))
    got = {rrs_pick(p, q, [0, 1, 5], gen(s)) for s in range(200)}
    assert got == {2, 3}


def test_rrs_residual_token_moves_into_a_skipped_child():
    """A child whose token q gives 0 is never accepted as a draft, but when the residual sample
    equals its token the walk still continues into it (its subtree is valid for that token)."""
    tree = make_tree([9, 2, 6], [-1, 0, 1])
    q = torch.full((2, V), 1.0 / (V - 1))
    q[0, 2] = 0.0
    res = accept_sampling_rrs(tree, one_hot([2, 6, 4]), q, gen())
    assert res.accepted_nodes == [0, 1, 2] and res.tokens == [2, 6, 4]


def test_rrs_leaf_bonus_and_root_only_tree():
    res = accept_sampling_rrs(make_tree([5], [-1]), one_hot([8]), torch.full((1, V), 0.1), gen())
    assert res == AcceptResult([0], [8], 8)


def test_shape_errors_name_the_bad_value():
    tree = make_tree([9, 1, 2], [-1, 0, 1])
    with pytest.raises(ValueError, match=r"target_logits has shape \(2, 10\), expected \[n = 3, V\]"):
        accept_greedy(tree, torch.zeros(2, V))
    with pytest.raises(ValueError, match=r"draft_probs has shape \(2, 7\)"):
        accept_sampling_rrs(tree, one_hot([1, 2, 3]), torch.full((2, 7), 1 / 7), gen())
    with pytest.raises(ValueError, match="node 1 at depth 1 has children but draft_probs has only 1 rows"):
        accept_sampling_rrs(tree, one_hot([1, 2, 3]), torch.full((1, V), 0.1), gen())
    with pytest.raises(ValueError, match="total mass 0.0"):
        accept_sampling_walk(tree, torch.zeros(3, V), gen())


def test_accept_greedy_lazy_equals_full_rows():
    """The fast path (rows computed only where the walk goes) against the plain rule."""
    from sglang_jetspec.core.acceptance import accept_greedy_lazy
    from sglang_jetspec.core.tree import build_tree

    gen = torch.Generator().manual_seed(7)
    for trial in range(200):
        V = 12
        lp = torch.log_softmax(torch.randn(5, V, generator=gen), -1)
        tree = build_tree(3, lp, budget=int(torch.randint(1, 25, (1,), generator=gen)), width=3)
        logits = torch.randn(tree.n, V, generator=gen)
        for i in range(1, tree.n):  # make the target agree with some drafted children
            if torch.rand((), generator=gen) < 0.6:
                logits[int(tree.parents[i]), int(tree.tokens[i])] += 10.0
        visited = []
        lazy = accept_greedy_lazy(tree, lambda i: (visited.append(i), logits[i])[1])
        full = accept_greedy(tree, logits)
        assert (lazy.accepted_nodes, lazy.tokens, lazy.bonus_token) == (
            full.accepted_nodes, full.tokens, full.bonus_token), trial
        assert visited == lazy.accepted_nodes  # only the walked rows were computed
