"""Host-side acceptance for sampled batches on CPU (where SGLang's verify is greedy-only):
the walk rule on any tree and recursive rejection sampling (rrs) on trees redrawn from the draft."""

from types import SimpleNamespace

import pytest
import torch

from sglang_jetspec.core.tree import build_tree
from sglang_jetspec.core.verify_layout import greedy_walk_with_layout, to_verify_layout
from sglang_jetspec.integration.sampling_accept import (adjust_logits, draft_q, redraw_trees, rule_from_env,
                                                        sample_accept)

V = 6


def _trees(seed, bs=3, n=7):
    g = torch.Generator().manual_seed(seed)
    return [build_tree(int(torch.randint(V, (1,), generator=g)),
                       torch.log_softmax(torch.randn(4, V, generator=g), -1), n, width=2)
            for _ in range(bs)]


def test_top_k_one_rows_follow_the_greedy_walk():
    trees = _trees(0)
    bs, n = len(trees), trees[0].n
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(bs * n, V, generator=g)
    # make the argmax follow a drafted child often, so paths are long
    for b, tree in enumerate(trees):
        for node, kids in enumerate(tree.children()):
            if kids:
                logits[b * n + node, tree.tokens[kids[-1]]] += 10.0
    predict, lens, index = sample_accept(trees, logits, [1.0] * bs, [1] * bs, [1.0] * bs,
                                              [0.0] * bs, torch.Generator().manual_seed(2))
    layout = to_verify_layout(trees, [0] * bs)
    paths, bonus = greedy_walk_with_layout(layout, logits.argmax(-1).view(bs, n))
    for b in range(bs):
        k = int(lens[b])
        assert [int(x) - b * n for x in index[b, :k]] == paths[b]
        assert (index[b, k:] == -1).all()
        assert int(predict[index[b, k - 1]]) == bonus[b]
    assert max(int(x) for x in lens) >= 3  # the test exercised multi-token paths


def test_padded_batches_use_only_each_trees_own_rows():
    """Per-request budgets: trees of 7, 3 and 1 nodes verified 7 rows per request."""
    g = torch.Generator().manual_seed(4)
    trees = [build_tree(int(torch.randint(V, (1,), generator=g)),
                        torch.log_softmax(torch.randn(4, V, generator=g), -1), k, width=2)
             for k in (7, 3, 1)]
    bs, n = 3, 7
    logits = torch.randn(bs * n, V, generator=g)
    for b, tree in enumerate(trees):
        for node, kids in enumerate(tree.children()):
            if kids:
                logits[b * n + node, tree.tokens[kids[0]]] += 10.0
        logits[b * n + tree.n:(b + 1) * n] = float("nan")  # dead rows must never be read
    predict, lens, index = sample_accept(trees, logits, [1.0] * bs, [1] * bs, [1.0] * bs,
                                              [0.0] * bs, torch.Generator().manual_seed(2), n=n)
    layout = to_verify_layout(trees, [0] * bs, n=n)
    paths, _ = greedy_walk_with_layout(layout, torch.nan_to_num(logits, nan=-1e9).argmax(-1).view(bs, n))
    for b, tree in enumerate(trees):
        k = int(lens[b])
        assert [int(x) - b * n for x in index[b, :k]] == paths[b]
        assert all(int(x) - b * n < tree.n for x in index[b, :k])
    assert int(lens[2]) == 1  # a root-only tree commits the target's own token only


def test_sampled_first_token_follows_the_target_distribution():
    """Root with drafted children {0, 1}; target p = softmax(logits / T). The committed first
    token must be ~p whatever the tree (walk rule), and a drafted child is accepted when hit."""
    tree = build_tree(5, torch.log_softmax(torch.tensor([[4.0, 3.0, 0, 0, 0, 0]]), -1), 3, width=2)
    assert sorted(tree.tokens[1:].tolist()) == [0, 1]
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.0, -1.0, 0.5]] * 3)
    p = torch.softmax(logits[0] / 0.7, -1)
    gen = torch.Generator().manual_seed(0)
    counts, draws = torch.zeros(V), 3000
    for _ in range(draws):
        predict, lens, index = sample_accept([tree], logits, [0.7], [1 << 30], [1.0], [0.0], gen)
        first = int(predict[0])
        counts[first] += 1
        assert int(lens[0]) == (2 if first in (0, 1) else 1)
    torch.testing.assert_close(counts / draws, p, atol=0.03, rtol=0)


def test_top_p_and_top_k_are_honoured():
    tree = build_tree(5, torch.log_softmax(torch.randn(1, V), -1), 2, width=1)
    logits = torch.tensor([[3.0, 2.9, 0.0, 0.0, 0.0, 0.0]] * 2)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(300):
        predict, *_ = sample_accept([tree], logits, [1.0], [2], [1.0], [0.0], gen)
        seen.add(int(predict[0]))
    assert seen == {0, 1}  # top-2 only
    seen = set()
    for _ in range(100):
        predict, *_ = sample_accept([tree], logits, [1.0], [1 << 30], [0.3], [0.0], gen)
        seen.add(int(predict[0]))
    assert seen == {0}  # the top token alone holds more than 0.3 of the mass


def test_adjust_logits_applies_bias_and_penalties_per_request():
    info = SimpleNamespace(acc_additive_penalties=torch.tensor([[0.0, -1.0], [2.0, 0.0]]),
                           acc_scaling_penalties=None,
                           logit_bias=torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    logits = torch.zeros(4, 2)  # 2 requests x 2 nodes
    out = adjust_logits(logits, info, 2)
    assert out.tolist() == [[1.0, -1.0], [1.0, -1.0], [2.0, 0.0], [2.0, 0.0]]
    assert not logits.any()  # the verify logits are left alone


def test_draft_q_scatters_the_tempered_subset_distribution():
    scores = torch.log_softmax(torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]), -1)  # [rows, C]
    cols = torch.tensor([4, 1, 3])
    q = draft_q(scores, cols, 0.5, V)
    assert q.shape == (2, V)
    assert (q[:, [0, 2, 5]] == 0).all()  # outside the draft vocabulary
    torch.testing.assert_close(q[0, cols], torch.softmax(torch.tensor([2.0, 0.0, -1.0]) / 0.5, -1))
    torch.testing.assert_close(q.sum(-1), torch.ones(2))
    full = draft_q(scores, None, 1.0, V)  # no draft vocabulary: the first C tokens
    torch.testing.assert_close(full[:, :3], scores.exp())
    with pytest.raises(ValueError, match="temperature 0"):
        draft_q(scores, cols, 0.0, V)
    with pytest.raises(ValueError, match="beyond vocab 4"):
        draft_q(scores, cols, 1.0, 4)


def test_rule_comes_from_the_environment_with_rrs_by_default():
    assert rule_from_env({}) == "rrs"
    assert rule_from_env({"SGLANG_JETSPEC_SAMPLING_RULE": " Walk "}) == "walk"
    with pytest.raises(ValueError, match="SGLANG_JETSPEC_SAMPLING_RULE='greedy'"):
        rule_from_env({"SGLANG_JETSPEC_SAMPLING_RULE": "greedy"})
    from sglang_jetspec.integration.server_args import check_budget_mode  # the launcher's check

    assert check_budget_mode({"SGLANG_JETSPEC_SAMPLING_RULE": "x"}) == [
        "SGLANG_JETSPEC_SAMPLING_RULE='x' must be one of ['rrs', 'walk']"]


def test_redraw_keeps_shapes_and_falls_back_where_q_is_too_narrow():
    trees = _trees(3, bs=3, n=7)
    g = torch.Generator().manual_seed(5)
    wide = torch.softmax(torch.randn(4, V, generator=g), -1)
    narrow = torch.zeros(4, V)
    narrow[:, 0] = 1.0  # one token a depth: a group of two siblings cannot be drawn from it
    out, qs = redraw_trees(trees, [wide, None, narrow], torch.Generator().manual_seed(6))
    assert qs[0] is wide and qs[1] is None and qs[2] is None
    assert out[1] is trees[1] and out[2] is trees[2]
    assert torch.equal(out[0].parents, trees[0].parents) and torch.equal(out[0].depths, trees[0].depths)
    for p, kids in enumerate(out[0].children()):  # each sibling group: distinct tokens
        assert len({int(out[0].tokens[c]) for c in kids}) == len(kids)
    with pytest.raises(ValueError, match="2 draft distributions for 3 trees"):
        redraw_trees(trees, [wide, wide], g)


def _rrs_rounds(redraw: bool, draws: int, seed: int = 0):
    """(first committed token, second or None) of `draws` rounds on one fixed-shape tree of 7
    nodes, width 2, over V tokens: the target row of a node depends on the node's own token
    (table[token] at temperature 0.8); q's first row is a sharper copy of the root's target
    row, the deeper rows are unrelated to the target."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(V, V, generator=g) * 1.5  # target logits after each token
    q_logits = torch.randn(3, V, generator=g) * 2.0
    q_logits[0] = table[5] * 1.5
    greedy = build_tree(5, torch.log_softmax(q_logits, -1), 7, width=2)
    q = draft_q(torch.log_softmax(q_logits, -1), None, 0.8, V)
    gen, out = torch.Generator().manual_seed(seed + 1), []
    for _ in range(draws):
        trees, qs = redraw_trees([greedy], [q], gen) if redraw else ([greedy], [q])
        tree = trees[0]
        logits = table[tree.tokens]  # [7, V]
        predict, lens, index = sample_accept([tree], logits, [0.8], [1 << 30], [1.0], [0.0], gen,
                                             draft_qs=qs)
        toks = [int(predict[index[0, j]]) for j in range(int(lens[0]))]
        out.append((toks[0], toks[1] if len(toks) > 1 else None))
    return table, out


def test_rrs_on_redrawn_trees_follows_the_target_and_fails_without_the_redraw():
    """The first committed token ~ p(. | root), the second (when the round went on) ~ p(. | first):
    chi-square at alpha 1e-3. The same acceptance on the greedy tree, not redrawn, is biased
    toward the drafts and must fail the first check."""
    from scipy.stats import chisquare

    def pvalue(tokens, p):
        counts = torch.bincount(torch.tensor(tokens), minlength=V).double()
        keep = p * len(tokens) >= 5
        obs = counts[keep].tolist() + [float(counts[~keep].sum())]
        exp = (p[keep] * len(tokens)).tolist() + [float(p[~keep].sum() * len(tokens))]
        if exp[-1] == 0:
            obs, exp = obs[:-1], exp[:-1]
        return chisquare(obs, exp).pvalue

    draws = 4000
    table, out = _rrs_rounds(True, draws)
    probs = torch.softmax(table.double() / 0.8, -1)
    assert pvalue([a for a, _ in out], probs[5]) > 1e-3
    seconds = [(a, b) for a, b in out if b is not None]
    assert len(seconds) > draws // 4  # the rounds often accepted a draft
    top_first = max(set(a for a, _ in seconds), key=[a for a, _ in seconds].count)
    assert pvalue([b for a, b in seconds if a == top_first], probs[top_first]) > 1e-3
    _, biased = _rrs_rounds(False, draws)
    assert pvalue([a for a, _ in biased], probs[5]) < 1e-3


def test_lazy_target_rows_give_the_dense_rules_results():
    """sample_accept computes each node's target distribution only when the walk reads it; with
    the same generator it must commit exactly what the rules give on the dense [k, V] rows."""
    from sglang_jetspec.core.acceptance import accept_sampling_rrs, accept_sampling_walk
    from sglang_jetspec.core.sampling import target_distribution

    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        tree = _trees(seed, bs=1, n=7)[0]
        logits = torch.randn(tree.n, V, generator=g) * 2
        temp, top_k, top_p = 0.5 + seed % 3 * 0.4, [1 << 30, 3][seed % 2], [1.0, 0.8][seed % 3 == 0]
        q = draft_q(torch.log_softmax(torch.randn(4, V, generator=g), -1), None, temp, V) if seed % 2 else None
        if q is not None:
            tree = redraw_trees([tree], [q], g)[0][0]
        predict, lens, index = sample_accept([tree], logits, [temp], [top_k], [top_p], [0.0],
                                             torch.Generator().manual_seed(seed), draft_qs=[q])
        dense = target_distribution(logits, temp, -1 if top_k >= V else top_k, top_p)
        gen = torch.Generator().manual_seed(seed)
        res = (accept_sampling_walk(tree, dense, gen) if q is None
               else accept_sampling_rrs(tree, dense, q, gen))
        k = int(lens[0])
        assert [int(x) for x in index[0, :k]] == res.accepted_nodes
        assert [int(predict[index[0, j]]) for j in range(k)] == res.tokens
