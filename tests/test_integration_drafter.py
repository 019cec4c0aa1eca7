"""The worker's drafting path (slot-indexed context pool + batched head forward) gives the
same per-depth log-probs as the reference head with its per-request HeadKVCache."""

import torch

from sglang_jetspec.core.head import DraftHead, HeadKVCache
from sglang_jetspec.core.head_config import HeadConfig
from sglang_jetspec.integration.drafter import Drafter
from sglang_jetspec.integration.head_pool import HeadContextPool, context_slot_table

VOCAB, D_TARGET, LAYERS_TARGET = 50, 24, 6


def _head(causal=True, layers=2, seed=0):
    cfg = HeadConfig.for_target(D_TARGET, LAYERS_TARGET, VOCAB, num_layers=layers, hidden_size=32,
                                num_attention_heads=4, num_key_value_heads=2, block_size=6,
                                causal_head=causal, mask_token_id=VOCAB - 1)
    torch.manual_seed(seed)
    head = DraftHead(cfg).eval()
    for p in head.parameters():  # random norms too, so a wrong key/position shows
        p.data.normal_(0, 0.3)
    return head


def _reference(head, embed, lm_head, anchor, anchor_pos, feats, depth):
    """The reference decoder's draft: one request, context fed through a HeadKVCache."""
    cfg = head.config
    cache = HeadKVCache(cfg, batch_size=1)
    block = torch.full((cfg.block_size,), cfg.mask_token_id)
    block[0] = anchor
    ctx = head.project_context(feats[None])
    h = head(embed[block][None], (anchor_pos + torch.arange(cfg.block_size))[None], ctx,
             torch.arange(feats.shape[0])[None], cache=cache)
    return torch.log_softmax(h[0, 1: 1 + depth] @ lm_head.T, -1)


def _setup(head, lens, seed=1, depth=4):
    g = torch.Generator().manual_seed(seed)
    k = len(head.config.target_layer_ids)
    embed = torch.randn(VOCAB, 32, generator=g)
    lm_head = torch.randn(VOCAB, 32, generator=g)
    drafter = Drafter(head, embed, lm_head, VOCAB, depth)
    cfg = head.config
    pool = HeadContextPool(cfg.num_hidden_layers, 64, cfg.num_key_value_heads, cfg.head_dim,
                           "cpu", torch.float32)
    table = torch.randperm(63, generator=g)[: 3 * 20].view(3, 20) + 1  # slot 0 stays unused
    feats = [torch.randn(n, k * D_TARGET, generator=g) for n in lens]
    return drafter, pool, table, feats, embed, lm_head


def test_pool_drafts_equal_reference_per_request():
    head = _head()
    lens = [7, 3, 12]
    drafter, pool, table, feats, embed, lm_head = _setup(head, lens)
    rpi = torch.tensor([2, 0, 1])
    for r, f in zip(rpi.tolist(), feats):  # context written in two chunks, like prefill + verify
        cut = f.shape[0] // 2
        for lo, hi in ((0, cut), (cut, f.shape[0])):
            pool.write(table[r, lo:hi], drafter.context_kv(f[lo:hi], torch.arange(lo, hi)))
    anchors = torch.tensor([5, 9, 13])
    slots, valid = context_slot_table(table, rpi, lens)
    got = drafter.draft_logprobs(anchors, torch.tensor(lens), pool.gather(slots), valid)
    assert got.shape == (3, 4, VOCAB)
    for b in range(3):
        want = _reference(head, embed, lm_head, int(anchors[b]), lens[b], feats[b], 4)
        torch.testing.assert_close(got[b], want, rtol=1e-4, atol=1e-4)


def test_bidirectional_head_also_matches():
    head = _head(causal=False)
    drafter, pool, table, feats, embed, lm_head = _setup(head, [5], seed=2)
    pool.write(table[0, :5], drafter.context_kv(feats[0], torch.arange(5)))
    slots, valid = context_slot_table(table, torch.tensor([0]), [5])
    got = drafter.draft_logprobs(torch.tensor([3]), torch.tensor([5]), pool.gather(slots), valid)
    want = _reference(head, embed, lm_head, 3, 5, feats[0], 4)
    torch.testing.assert_close(got[0], want, rtol=1e-4, atol=1e-4)


def test_the_draft_reads_the_context_stored_at_the_requests_slots():
    """Drafting reads the pool at the request's own slots (what a radix-cache hit keeps)."""
    head = _head()
    drafter, pool, table, feats, *_ = _setup(head, [6, 6], seed=3)
    for r in (0, 1):
        pool.write(table[r, :6], drafter.context_kv(feats[r], torch.arange(6)))
    anchors, pos = torch.tensor([4]), torch.tensor([6])
    own = context_slot_table(table, torch.tensor([0]), [6])
    other = context_slot_table(table, torch.tensor([1]), [6])
    a = drafter.draft_logprobs(anchors, pos, pool.gather(own[0]), own[1])
    b = drafter.draft_logprobs(anchors, pos, pool.gather(other[0]), other[1])
    assert not torch.allclose(a, b, atol=1e-3)
    pool.write(table[1, :6], drafter.context_kv(feats[0], torch.arange(6)))  # same context
    c = drafter.draft_logprobs(anchors, pos, pool.gather(other[0]), other[1])
    torch.testing.assert_close(a, c)


def test_context_slot_table_pads_with_slot_zero():
    table = torch.arange(30).view(3, 10)
    slots, valid = context_slot_table(table, torch.tensor([2, 0]), [3, 1])
    assert slots.tolist() == [[20, 21, 22], [0, 0, 0]]
    assert valid.tolist() == [[True, True, True], [True, False, False]]


def test_fewer_rows_give_the_same_leading_rows_for_both_head_kinds():
    """rows < depth (the batch's trees cannot reach deeper): a causal head runs a shorter block,
    a bidirectional head the full block; both must equal the leading rows of the full draft."""
    import pytest

    for causal in (True, False):
        head = _head(causal=causal)
        drafter, pool, table, feats, *_ = _setup(head, [6, 4], seed=4)
        for r, f in enumerate(feats):
            pool.write(table[r, : f.shape[0]], drafter.context_kv(f, torch.arange(f.shape[0])))
        slots, valid = context_slot_table(table, torch.tensor([0, 1]), [6, 4])
        args = (torch.tensor([4, 7]), torch.tensor([6, 4]), pool.gather(slots), valid)
        full = drafter.draft_logprobs(*args)
        for rows in (1, 2, 3):
            part = drafter.draft_logprobs(*args, rows=rows)
            assert part.shape == (2, rows, VOCAB)
            torch.testing.assert_close(part, full[:, :rows], rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match=r"rows 5 must be in \[1, depth = 4\]"):
            drafter.draft_logprobs(*args, rows=5)


def test_a_draft_vocabulary_scores_only_its_tokens_and_matches_the_masked_reference():
    """head.draft_vocab set: the batched drafter's log-probs equal the reference head's rows
    scored by the plain masked softmax (core/draft_vocab.py), -inf outside the subset."""
    from sglang_jetspec.core.draft_vocab import DraftVocab, reference_logprobs

    head = _head()
    ids = torch.tensor([0, 3, 4, 10, 17, 22, 31, 40, 48])
    head.draft_vocab = DraftVocab(ids)
    lens = [5, 9]
    drafter, pool, table, feats, embed, lm_head = _setup(head, lens, seed=6)
    for r, f in enumerate(feats):
        pool.write(table[r, : f.shape[0]], drafter.context_kv(f, torch.arange(f.shape[0])))
    slots, valid = context_slot_table(table, torch.tensor([0, 1]), lens)
    got = drafter.draft_logprobs(torch.tensor([2, 8]), torch.tensor(lens), pool.gather(slots), valid)
    for b in range(2):
        full = _reference(head, embed, lm_head, [2, 8][b], lens[b], feats[b], 4)  # log_softmax over all
        want = reference_logprobs(full, torch.eye(VOCAB), VOCAB, ids)  # the same logits, masked
        torch.testing.assert_close(got[b][:, ids], want[:, ids], rtol=1e-4, atol=1e-4)
    assert torch.isinf(got[:, :, 1]).all()
