"""build_tree_from_top (core/tree.py): the tree from each row's top-k table is the tree from the
full rows (k >= width), and the worker's top_of(draft_scores) gives exactly the full draft's top-k, with and
without a draft vocabulary -- so moving [b, D, W] instead of [b, D, V] to the host changes nothing."""

import pytest
import torch

from sglang_jetspec.core.tree import build_tree, build_tree_from_top


def _same(a, b):
    for f in ("tokens", "parents", "depths", "ranks"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    torch.testing.assert_close(a.scores, b.scores)


@pytest.mark.parametrize("seed", range(12))
def test_top_table_tree_equals_full_rows_tree(seed):
    g = torch.Generator().manual_seed(seed)
    D, V = int(torch.randint(1, 9, (), generator=g)), int(torch.randint(2, 60, (), generator=g))
    lp = torch.log_softmax(3 * torch.randn(D, V, generator=g), -1)
    budget = int(torch.randint(1, 40, (), generator=g))
    width = int(torch.randint(1, 9, (), generator=g))
    depth = int(torch.randint(1, D + 1, (), generator=g))
    k = min(V, width + int(torch.randint(0, 3, (), generator=g)))  # the worker asks for the batch's widest
    vals, ids = lp.topk(k, -1)
    _same(build_tree_from_top(5, vals, ids, budget, width, depth), build_tree(5, lp, budget, width, depth))


def test_a_table_narrower_than_the_width_caps_it():
    lp = torch.log_softmax(torch.randn(4, 30, generator=torch.Generator().manual_seed(1)), -1)
    vals, ids = lp.topk(2, -1)
    _same(build_tree_from_top(0, vals, ids, 12, 7), build_tree(0, lp, 12, 2))


@pytest.mark.parametrize("vals,ids,msg", [
    (torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.long), "must both be"),
    (torch.tensor([[-1.0, float("nan")]]), torch.zeros(1, 2, dtype=torch.long), "NaN"),
    (torch.tensor([[0.5, -1.0]]), torch.zeros(1, 2, dtype=torch.long), "not logits"),
    (torch.tensor([[-2.0, -1.0]]), torch.zeros(1, 2, dtype=torch.long), "descending"),
])
def test_bad_tables_are_refused(vals, ids, msg):
    with pytest.raises(ValueError, match=msg):
        build_tree_from_top(0, vals, ids, 4, 2)


@pytest.mark.parametrize("with_vocab", [False, True])
def test_drafter_top_equals_the_top_of_its_full_rows(with_vocab):
    from test_integration_drafter import VOCAB, _head, _setup

    from sglang_jetspec.core.draft_vocab import DraftVocab
    from sglang_jetspec.integration.drafter import top_of
    from sglang_jetspec.integration.head_pool import context_slot_table

    head = _head()
    if with_vocab:
        head.draft_vocab = DraftVocab(torch.arange(0, VOCAB, 3))
    lens = [6, 9, 4]
    drafter, pool, table, feats, *_ = _setup(head, lens, seed=7)
    for r, f in enumerate(feats):
        pool.write(table[r, : f.shape[0]], drafter.context_kv(f, torch.arange(f.shape[0])))
    slots, valid = context_slot_table(table, torch.tensor([0, 1, 2]), lens)
    args = (torch.tensor([3, 6, 9]), torch.tensor(lens), pool.gather(slots), valid)
    full = drafter.draft_logprobs(*args, rows=3)
    vals, ids = top_of(*drafter.draft_scores(*args, rows=3), 5)
    want_vals, want_ids = full.topk(5, -1)
    torch.testing.assert_close(vals, want_vals, rtol=1e-5, atol=1e-5)
    assert torch.equal(ids, want_ids)
    if with_vocab:
        assert set(ids.flatten().tolist()) <= set(range(0, VOCAB, 3))
    big_vals, _ = top_of(*drafter.draft_scores(*args, rows=3), 10**6)  # k above the tokens scored: all of them
    assert big_vals.shape[-1] == (len(head.draft_vocab) if with_vocab else VOCAB)


@pytest.mark.parametrize("seed", range(6))
def test_node_draft_logprobs_are_the_rows_own_values(seed):
    """Plain trees: a node's own draft log-prob is its score step; with the n-gram prior (scores
    rescored and capped) it is still its row's value for its token, which the table gives back."""
    from sglang_jetspec.core.pair_prior import PairPrior
    from sglang_jetspec.core.tree import node_draft_logprobs

    g = torch.Generator().manual_seed(seed)
    D, V = 5, 40
    lp = torch.log_softmax(3 * torch.randn(D, V, generator=g), -1)
    vals, ids = lp.topk(12, -1)
    plain = build_tree_from_top(3, vals, ids, 20, 4)
    own = node_draft_logprobs(plain, vals, ids)
    steps = plain.scores - plain.scores[plain.parents.clamp_min(0)]
    torch.testing.assert_close(own[1:], steps[1:])
    assert own[0] == 0
    seqs = [torch.randint(V, (30,), generator=g).tolist() for _ in range(20)]
    prior = PairPrior.from_sequences(seqs, V)
    rescored = build_tree_from_top(3, vals, ids, 20, 4, prior=prior, prev_token=7)
    own = node_draft_logprobs(rescored, vals, ids)
    want = torch.tensor([0.0] + [float(lp[d - 1, t]) for d, t in zip(rescored.depths[1:].tolist(),
                                                                        rescored.tokens[1:].tolist())])
    torch.testing.assert_close(own, want)
    narrow = node_draft_logprobs(rescored, vals[:, :1], ids[:, :1])  # tokens outside the table
    assert bool(torch.isinf(narrow[1:]).any())
    with pytest.raises(ValueError, match="exceeds the table's 1 rows"):
        node_draft_logprobs(rescored, vals[:1], ids[:1])
