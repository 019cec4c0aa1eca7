"""The reference decoder on tiny random models (fast): greedy parity with plain decoding, and
sampled outputs that follow the target's distribution exactly (chi-square)."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from sglang_jetspec.core.head import DraftHead
from sglang_jetspec.core.head_config import HeadConfig
from sglang_jetspec.core.sampling import target_distribution
from sglang_jetspec.reference.ar import generate_ar
from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
from sglang_jetspec.reference.target import HFTarget


def tiny_target(vocab: int, seed: int, sharpness: float = 40.0) -> HFTarget:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                      tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper, more varied next-token distributions than the default init
        model.lm_head.weight.mul_(sharpness)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return HFTarget.from_model(model)


def tiny_head(target: HFTarget, seed: int) -> DraftHead:
    cfg = HeadConfig.for_target(target.hidden_size, target.num_layers, target.vocab_size, num_layers=1,
                                mask_token_id=target.vocab_size - 1, rope_theta=10000.0)
    torch.manual_seed(seed)
    return DraftHead(cfg)


@pytest.mark.parametrize("budget,width", [(1, 1), (4, 1), (8, 3), (24, 4)])
def test_greedy_parity_tiny(budget, width):
    target = tiny_target(vocab=50, seed=1)
    dec = ReferenceDecoder(target, tiny_head(target, seed=2), TreeSettings(budget=budget, width=width, depth=6))
    gen = torch.Generator().manual_seed(0)
    total_drafts = 0
    for _ in range(6):
        prompt = torch.randint(0, 49, (int(torch.randint(3, 12, (), generator=gen)),), generator=gen).tolist()
        a = generate_ar(target, prompt, 24)
        r = dec.generate(prompt, 24)
        assert r.output_ids == a.output_ids
        assert generate_ar(target, prompt, 24, loop="hf").output_ids == a.output_ids  # independent oracle
        assert len(r.output_ids) == 24 and sum(r.accepted) == 23 and len(r.accepted) == r.rounds
        total_drafts += 23 - r.rounds
    if budget == 1:
        assert total_drafts == 0


@pytest.mark.parametrize("with_eos", [False, True])
def test_ar_step_loop_equals_hf_generate(with_eos):
    """The step loop (the wall-clock baseline) emits Hugging Face generate's tokens, stops included."""
    target = tiny_target(vocab=50, seed=3)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 49, (int(torch.randint(2, 10, (), generator=gen)),), generator=gen).tolist()
               for _ in range(8)]
    if with_eos:  # a token the free-running outputs emit mid-answer, so some answers stop early
        counts = torch.bincount(torch.tensor([t for p in prompts for t in generate_ar(target, p, 30).output_ids[1:-1]]))
        target.model.generation_config.eos_token_id = int(counts.argmax())
    stopped = 0
    for prompt in prompts:
        for n in (1, 5, 30):
            step, hf = generate_ar(target, prompt, n), generate_ar(target, prompt, n, loop="hf")
            assert step.output_ids == hf.output_ids, (prompt, n)
            assert step.finish_reason == hf.finish_reason
            stopped += step.finish_reason == "stop"
    if with_eos:
        assert stopped > 0, "no prompt reached the EOS token: the stop path went untested"
    with pytest.raises(ValueError, match="greedy only"):
        generate_ar(target, [1, 2], 4, temperature=1.0, loop="hf")
    with pytest.raises(ValueError, match="expected one of"):
        generate_ar(target, [1, 2], 4, loop="fast")


def _exact_joint(target: HFTarget, prompt: list[int], temperature: float, top_k: int, top_p: float):
    """P(x1, x2) of the target's sampling distribution, by enumeration."""
    V = target.vocab_size
    with torch.no_grad():
        logits1 = target.model(torch.tensor([prompt])).logits[0, -1:]
        p1 = target_distribution(logits1, temperature, top_k, top_p)[0]
        ids = torch.tensor([prompt + [x] for x in range(V)])
        logits2 = target.model(ids).logits[:, -1]
        p2 = target_distribution(logits2, temperature, top_k, top_p)
    return (p1[:, None] * p2).double().numpy()  # [V, V]


def _chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    counts, probs = counts.ravel(), probs.ravel()
    n = counts.sum()
    big = probs * n >= 5  # pool the small cells so the chi-square approximation holds
    assert counts[probs == 0].sum() == 0, "sampled a sequence of probability zero"
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(probs[big] * n, probs[~big].sum() * n)
    keep = exp > 0
    return float(chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue)


@pytest.mark.parametrize("rule", ["rrs", "walk"])
def test_sampling_follows_target_distribution(rule):
    """2000 sampled 2-token continuations through trees (either acceptance rule) vs the exact target law."""
    V, T, top_k, top_p = 6, 0.8, 5, 0.95
    target = tiny_target(vocab=V, seed=3, sharpness=6.0)
    dec = ReferenceDecoder(target, tiny_head(target, seed=4),
                           TreeSettings(budget=8, width=3, depth=3, sampling_rule=rule))
    prompt = [1, 2, 3, 4]
    exact = _exact_joint(target, prompt, T, top_k, top_p)
    used = [dec.generate(prompt, 12, temperature=T, seed=s) for s in range(20)]
    drafts_accepted = sum(sum(r.accepted) - r.rounds for r in used)
    assert drafts_accepted > 20, "the drafted tree was (almost) never used: the test would prove nothing"
    counts = np.zeros((V, V))
    for seed in range(2000):
        r = dec.generate(prompt, 2, temperature=T, top_k=top_k, top_p=top_p, seed=seed)
        counts[r.output_ids[0], r.output_ids[1]] += 1
    assert _chi2_pvalue(counts, exact) > 1e-3
    # negative control: the same samples against the law at another temperature must be rejected
    assert _chi2_pvalue(counts, _exact_joint(target, prompt, 1.5, top_k, top_p)) < 1e-3
    if rule == "rrs":
        with pytest.raises(ValueError, match=r"sampling rule 'spec': expected one of \['rrs', 'walk'\]"):
            ReferenceDecoder(target, tiny_head(target, seed=4), TreeSettings(sampling_rule="spec"))


def _keep_rows_reference(cache, prefix_len, keep):
    idx = torch.cat([torch.arange(prefix_len), prefix_len + keep])
    return [(l.keys.index_select(2, idx), l.values.index_select(2, idx)) for l in cache.layers]


def test_keep_cache_rows_matches_gather_reference():
    """The in-place cut keeps exactly the prefix plus the accepted tree rows, in path order, and the
    cache grows correctly afterwards (the next forward's rows land after them)."""
    from sglang_jetspec.reference.target import keep_cache_rows

    target = tiny_target(vocab=50, seed=4)
    gen = torch.Generator().manual_seed(5)
    for prefix_len, n_tree, keep in [(5, 6, [0, 2, 5]), (3, 1, [0]), (7, 8, [0, 1, 2, 3, 4, 5, 6, 7]), (4, 5, [0, 4])]:
        cache = target.new_cache()
        ids = torch.randint(0, 49, (prefix_len + n_tree,), generator=gen)
        target.forward(ids, cache, 0, logits=False)
        keep_t = torch.tensor(keep)
        want = _keep_rows_reference(cache, prefix_len, keep_t)
        keep_cache_rows(cache, prefix_len, keep_t)
        for layer, (k, v) in zip(cache.layers, want):
            assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)
        assert cache.get_seq_length() == prefix_len + len(keep)
        target.forward(torch.tensor([3]), cache, prefix_len + len(keep), logits=False)
        for layer, (k, _) in zip(cache.layers, want):
            assert torch.equal(layer.keys[:, :, : k.shape[2]], k) and layer.keys.shape[2] == k.shape[2] + 1
    with pytest.raises(ValueError, match="beyond"):
        keep_cache_rows(cache, prefix_len, torch.tensor([0, 9]))


def test_grouped_kv_attention_matches_transformers_sdpa_on_tree_verifies(monkeypatch):
    """The reference target's masked attention (KV heads grouped, reference/attention.py) gives
    transformers' sdpa values on tree verifies over a cache, and is what actually runs."""
    import sglang_jetspec.reference.attention as attention
    from sglang_jetspec.core.tree import build_tree

    target = tiny_target(vocab=50, seed=6)  # 4 query heads over 2 KV heads
    assert target.attention == "sdpa-gqa"
    stock = tiny_target(vocab=50, seed=6)  # the same weights
    stock.model.set_attn_implementation("sdpa")
    calls = []
    real = attention.F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(k.get("enable_gqa")) or real(*a, **k))
    gen = torch.Generator().manual_seed(7)
    for prefix in (3, 17):
        ids = torch.randint(0, 49, (prefix,), generator=gen)
        lp = torch.log_softmax(torch.randn(5, 50, generator=gen), dim=-1)
        tree = build_tree(int(ids[-1]), lp, 12, 3, 5)
        outs = []
        for t in (target, stock):
            cache = t.new_cache()
            t.forward(ids, cache, 0, logits=False)
            calls.clear()
            outs.append(t.forward(tree.tokens, cache, prefix, layer_ids=[0, 2], tree_mask=tree.ancestor_mask(),
                                  depths=tree.depths))
            # one attention call per layer; grouped (enable_gqa) for ours, repeated heads for stock's
            assert calls == ([True] * 3 if t is target else [None] * 3), calls
        assert torch.allclose(outs[0].hidden, outs[1].hidden, atol=1e-6, rtol=0)
        assert torch.allclose(outs[0].features, outs[1].features, atol=1e-6, rtol=0)
