"""Host-side acceptance for sampled batches on CPU (where SGLang's verify is greedy-only)."""

from types import SimpleNamespace

import torch

from sglang_jetspec.core.tree import build_tree
from sglang_jetspec.core.verify_layout import greedy_walk_with_layout, to_verify_layout
from sglang_jetspec.integration.sampling_accept import adjust_logits, sample_walk_accept

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
    predict, lens, index = sample_walk_accept(trees, logits, [1.0] * bs, [1] * bs, [1.0] * bs,
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
    predict, lens, index = sample_walk_accept(trees, logits, [1.0] * bs, [1] * bs, [1.0] * bs,
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
        predict, lens, index = sample_walk_accept([tree], logits, [0.7], [1 << 30], [1.0], [0.0], gen)
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
        predict, *_ = sample_walk_accept([tree], logits, [1.0], [2], [1.0], [0.0], gen)
        seen.add(int(predict[0]))
    assert seen == {0, 1}  # top-2 only
    seen = set()
    for _ in range(100):
        predict, *_ = sample_walk_accept([tree], logits, [1.0], [1 << 30], [0.3], [0.0], gen)
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
