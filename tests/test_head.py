"""DraftHead math: cached vs one-shot, masks, the training layout, rotary, and an independent oracle."""

import math

import pytest
import torch

from sglang_jetspec.core.head import DraftHead, HeadKVCache, block_positions, build_block_attn_mask
from sglang_jetspec.core.head_config import HeadConfig, default_target_layer_ids

ATOL = 1e-5


def make_head(causal=True, layers=2, seed=0, bias=False):
    cfg = HeadConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, vocab_size=100, block_size=4, num_target_layers=12,
        target_layer_ids=[1, 5, 9], rope_theta=10000.0, rms_norm_eps=1e-6, causal_head=causal,
        target_hidden_size=24, attention_bias=bias, mask_token_id=99)
    torch.manual_seed(seed)
    head = DraftHead(cfg)
    with torch.no_grad():  # non-trivial norm weights so a wrong norm placement shows up
        for name, p in head.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return head.eval()


def rand_inputs(head, b=1, t=10, q=4, anchor=None):
    g = torch.Generator().manual_seed(1)
    d = head.config.hidden_size
    ctx = head.project_context(torch.randn(b, t, head.config.num_target_features, generator=g))
    block = torch.randn(b, q, d, generator=g)
    a = t if anchor is None else anchor
    bpos = (a + torch.arange(q)).expand(b, q)
    cpos = torch.arange(t).expand(b, t)
    return block, bpos, ctx, cpos


@torch.no_grad()
def test_cache_chunks_equal_one_shot():
    head = make_head()
    block, bpos, ctx, cpos = rand_inputs(head, b=2, t=10)
    want = head(block, bpos, ctx, cpos)
    # prefill in a chunk, then the second chunk with the block
    cache = HeadKVCache(head.config, batch_size=2, capacity=4)  # forces growth
    head.extend_cache(ctx[:, :6], cpos[:, :6], cache)
    got = head(block, bpos, ctx[:, 6:], cpos[:, 6:], cache=cache)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert cache.lengths.tolist() == [10, 10]
    # the realistic loop: round 1 drafts a block too; its block keys must not stay in the cache
    cache = HeadKVCache(head.config, batch_size=2)
    head(torch.randn(2, 4, 32), (6 + torch.arange(4)).expand(2, 4), ctx[:, :6], cpos[:, :6], cache=cache)
    got = head(block, bpos, ctx[:, 6:], cpos[:, 6:], cache=cache)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    # the head's output depends on the context at all (so the checks above mean something)
    assert not torch.allclose(head(block, bpos, ctx[:, 3:], cpos[:, 3:]), want, atol=1e-3)


@torch.no_grad()
def test_cache_uneven_rows_equal_per_row():
    """Rows with different context lengths, padded: each row equals its own batch-1 run."""
    head = make_head()
    g = torch.Generator().manual_seed(2)
    ctx = head.project_context(torch.randn(2, 9, head.config.num_target_features, generator=g))
    block = torch.randn(2, 4, 32, generator=g)
    lens1, lens2 = torch.tensor([5, 3]), torch.tensor([2, 4])  # row r: lens1[r] then lens2[r]
    cache = HeadKVCache(head.config, batch_size=2)
    head.extend_cache(ctx[:, :5], torch.arange(5).expand(2, 5), cache, ctx_lens=lens1)
    tot = lens1 + lens2
    pos2 = lens1[:, None] + torch.arange(4)
    bpos = tot[:, None] + torch.arange(4)
    got = head(block, bpos, ctx[:, 5:], pos2, cache=cache, ctx_lens=lens2)
    assert cache.lengths.tolist() == tot.tolist()
    for r in range(2):
        c = torch.cat([ctx[r, : lens1[r]], ctx[r, 5: 5 + lens2[r]]])[None]
        want = head(block[r:r + 1], bpos[r:r + 1], c, torch.arange(int(tot[r]))[None])
        torch.testing.assert_close(got[r:r + 1], want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
@torch.no_grad()
def test_causal_mask_inside_block(causal):
    head = make_head(causal=causal)
    block, bpos, ctx, cpos = rand_inputs(head)
    out = head(block, bpos, ctx, cpos)
    block2 = block.clone()
    block2[:, 2] += 1.0  # change slot 2
    out2 = head(block2, bpos, ctx, cpos)
    assert not torch.allclose(out2[:, 2:], out[:, 2:], atol=1e-4)
    if causal:
        torch.testing.assert_close(out2[:, :2], out[:, :2], atol=0, rtol=0)
    else:
        assert not torch.allclose(out2[:, :2], out[:, :2], atol=1e-4)


def test_build_block_attn_mask_small():
    m = build_block_attn_mask(3, torch.tensor([1, 3]), 2, causal=True).int()
    want = torch.tensor([
        # ctx 0 1 2 | b0s0 b0s1 b1s0 b1s1
        [1, 0, 0, 1, 0, 0, 0],
        [1, 0, 0, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 1, 0],
        [1, 1, 1, 0, 0, 1, 1]])
    assert torch.equal(m, want)
    bidir = want.clone()
    bidir[0, 4] = bidir[2, 6] = 1
    assert torch.equal(build_block_attn_mask(3, torch.tensor([1, 3]), 2, causal=False).int(), bidir)
    batched = build_block_attn_mask(3, torch.tensor([[1, 3], [2, 2]]), 2)  # [2, 4, 7]
    assert batched.shape == (2, 4, 7) and torch.equal(batched[0].int(), want)
    assert batched[1, :, :3].int().tolist() == [[1, 1, 0]] * 4
    assert torch.equal(block_positions(torch.tensor([1, 3]), 2), torch.tensor([1, 2, 3, 4]))


@pytest.mark.parametrize("causal", [True, False])
@torch.no_grad()
def test_training_mask_equals_separate_blocks(causal):
    head = make_head(causal=causal)
    S, T = 4, 20
    anchors = torch.tensor([3, 8, 15, 19])
    g = torch.Generator().manual_seed(3)
    ctx = head.project_context(torch.randn(1, T, head.config.num_target_features, generator=g))
    blocks = torch.randn(1, len(anchors) * S, 32, generator=g)
    pos = block_positions(anchors, S)[None]
    mask = build_block_attn_mask(T, anchors, S, causal=causal)[None]
    got = head(blocks, pos, ctx, torch.arange(T)[None], attn_mask=mask)
    for j, a in enumerate(anchors.tolist()):
        sl = slice(j * S, (j + 1) * S)
        want = head(blocks[:, sl], pos[:, sl], ctx[:, :a], torch.arange(a)[None])
        torch.testing.assert_close(got[:, sl], want, atol=ATOL, rtol=0)


@torch.no_grad()
def test_rotary_relative_shift_invariance():
    head = make_head()
    block, bpos, ctx, cpos = rand_inputs(head, b=2)
    out = head(block, bpos, ctx, cpos)
    torch.testing.assert_close(head(block, bpos + 37, ctx, cpos + 37), out, atol=1e-5, rtol=0)
    # moving only the block changes relative distances, so the output must change
    assert not torch.allclose(head(block, bpos + 5, ctx, cpos), out, atol=1e-4)


def _oracle_one_layer(head, block, bpos, target_hidden, cpos, causal):
    """Plain per-head loops: fc/hidden_norm, one Qwen3 layer (GQA, rotary pairs j, j+hd/2), norm."""
    c, sd = head.config, {k: v.double() for k, v in head.state_dict().items()}
    hd, hq, hkv, eps = c.head_dim, c.num_attention_heads, c.num_key_value_heads, c.rms_norm_eps

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w

    def lin(x, name):
        y = x @ sd[name + ".weight"].T
        return y + sd[name + ".bias"] if name + ".bias" in sd else y

    def rot(x, p):  # x [n, hd] at positions p [n]
        out = x.clone()
        for j in range(hd // 2):
            ang = p.double() * c.rope_theta ** (-2 * j / hd)
            a, b = x[:, j], x[:, j + hd // 2]
            out[:, j] = a * torch.cos(ang) - b * torch.sin(ang)
            out[:, j + hd // 2] = b * torch.cos(ang) + a * torch.sin(ang)
        return out

    ctx = rms(target_hidden.double() @ sd["fc.weight"].T, sd["hidden_norm.weight"])  # [t, d]
    h = block.double()  # [q, d]
    L = "layers.0."
    x = rms(h, sd[L + "input_layernorm.weight"])
    kv_in = torch.cat([ctx, x])
    allpos = torch.cat([cpos, bpos])
    t, q = len(cpos), len(bpos)
    heads = []
    for i in range(hq):
        g = i // (hq // hkv)  # kv head serving q head i
        qi = rot(rms(lin(x, L + "self_attn.q_proj")[:, i * hd:(i + 1) * hd], sd[L + "self_attn.q_norm.weight"]), bpos)
        ki = rot(rms(lin(kv_in, L + "self_attn.k_proj")[:, g * hd:(g + 1) * hd], sd[L + "self_attn.k_norm.weight"]), allpos)
        vi = lin(kv_in, L + "self_attn.v_proj")[:, g * hd:(g + 1) * hd]
        scores = torch.einsum("qd,kd->qk", qi, ki) / math.sqrt(hd)
        for a in range(q):
            for bb in range(q):
                if causal and bb > a:
                    scores[a, t + bb] = -math.inf
        heads.append(torch.softmax(scores, -1) @ vi)
    h = h + lin(torch.cat(heads, -1), L + "self_attn.o_proj")
    x = rms(h, sd[L + "post_attention_layernorm.weight"])
    gate, up = lin(x, L + "mlp.gate_proj"), lin(x, L + "mlp.up_proj")
    h = h + lin(gate * torch.sigmoid(gate) * up, L + "mlp.down_proj")
    return rms(h, sd["norm.weight"])


@pytest.mark.parametrize("causal,bias", [(True, False), (False, True)])
@torch.no_grad()
def test_matches_independent_oracle(causal, bias):
    head = make_head(causal=causal, layers=1, bias=bias)
    g = torch.Generator().manual_seed(4)
    th = torch.randn(6, head.config.num_target_features, generator=g)
    block = torch.randn(4, 32, generator=g)
    cpos, bpos = torch.arange(6) + 3, torch.arange(4) + 9
    got = head(block[None], bpos[None], head.project_context(th[None]), cpos[None])[0]
    want = _oracle_one_layer(head, block, bpos, th, cpos, causal)
    torch.testing.assert_close(got.double(), want, atol=ATOL, rtol=0)


def test_default_target_layer_ids_match_published():
    assert default_target_layer_ids(36, 5) == [1, 9, 17, 25, 33]  # Qwen3-8B head
    assert default_target_layer_ids(48, 5) == [1, 12, 23, 34, 45]  # Qwen3-30B-A3B head
    assert default_target_layer_ids(36, 1) == [18]


def test_project_context_rejects_wrong_width():
    head = make_head()
    with pytest.raises(ValueError, match="target hidden width 70"):
        head.project_context(torch.randn(1, 2, 70))


def test_bad_attn_mask_shape_is_named():
    head = make_head()
    block, bpos, ctx, cpos = rand_inputs(head)
    with pytest.raises(ValueError, match=r"bool \[1, 4, 14\]"):
        head(block, bpos, ctx, cpos, attn_mask=torch.ones(1, 4, 10, dtype=torch.bool))
