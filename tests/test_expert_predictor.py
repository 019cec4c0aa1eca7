"""Expert predictor: exact on deterministic routing, pair context, decay, eviction, metrics, and on
the real embedded MoE target it beats the global-frequency baseline on a held-out prompt."""

import json
from pathlib import Path

import pytest
import torch

from sglang_jetspec.core.expert_predictor import ExpertPredictor, expert_set_metrics, expert_union_metrics
from sglang_jetspec.core.tree import build_tree


L, E, K = 3, 8, 2


def _table(g, vocab):
    """[vocab, L, K] a fixed expert set per token and layer (deterministic routing)."""
    return torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(vocab * L)]).view(vocab, L, K)


def test_learns_deterministic_routing_exactly_and_unseen_tokens_fall_back_to_global():
    g = torch.Generator().manual_seed(0)
    table = _table(g, 20)
    seq = torch.randint(0, 10, (200,), generator=g)  # tokens 10.. never seen
    pred = ExpertPredictor(L, E, K)
    pred.update_sequence(seq, table[seq])
    seen = torch.arange(10)
    assert expert_set_metrics(pred.predict(seen), table[seen]) == (1.0, 1.0)
    unseen = torch.arange(10, 20)
    assert torch.equal(pred.predict(unseen), pred.predict_global(10))
    # the global rates are the activation shares: they sum to K per layer
    assert torch.allclose(pred.global_rates().sum(-1), torch.full((L,), float(K), dtype=torch.float64))
    # and the baseline is far worse than the learned affinity on the seen tokens
    p_glob, _ = expert_set_metrics(pred.predict_global(10), table[seen])
    assert p_glob < 0.7


def test_pair_context_resolves_context_dependent_routing():
    # token 5 routes to {0, 1} after token 1 and to {6, 7} after token 2 (every layer)
    a, b = torch.tensor([0, 1]), torch.tensor([6, 7])
    toks = torch.tensor([5] * 8)
    prev = torch.tensor([1, 2] * 4)
    routed = torch.stack([a if p == 1 else b for p in prev.tolist()])[:, None, :].expand(8, L, K)
    with_pairs = ExpertPredictor(L, E, K, bigram_min_count=2)
    with_pairs.update(toks, routed, prev)
    q = with_pairs.predict(torch.tensor([5, 5]), torch.tensor([1, 2]))  # [2, L, K]
    assert q[0].sort(-1).values.tolist() == [[0, 1]] * L
    assert q[1].sort(-1).values.tolist() == [[6, 7]] * L
    unigram = ExpertPredictor(L, E, K, use_bigram=False)
    unigram.update(toks, routed, prev)
    u = unigram.predict(torch.tensor([5, 5]), torch.tensor([1, 2]))
    assert torch.equal(u[0], u[1])  # without context it cannot tell the two apart
    # a pair seen fewer than bigram_min_count times is not trusted: falls back to the token level
    strict = ExpertPredictor(L, E, K, bigram_min_count=10)
    strict.update(toks, routed, prev)
    s = strict.predict(torch.tensor([5, 5]), torch.tensor([1, 2]))
    assert torch.equal(s[0], s[1])


def test_predict_tree_uses_each_nodes_parent_token_as_context():
    g = torch.Generator().manual_seed(1)
    table = _table(g, 12)
    pred = ExpertPredictor(L, E, K, bigram_min_count=1)
    seq = torch.randint(0, 12, (300,), generator=g)
    pred.update_sequence(seq, table[seq])
    tree = build_tree(3, torch.randn(4, 12, generator=g).log_softmax(-1), budget=10, width=3)
    prev = torch.cat([torch.tensor([7]), tree.tokens[tree.parents[1:]]])
    assert torch.equal(pred.predict_tree(tree, root_prev_token=7), pred.predict(tree.tokens, prev))
    assert pred.predict_tree(tree).shape == (tree.n, L, K)


@pytest.mark.parametrize("trained", [False, True])
def test_predict_trees_equals_one_call_per_tree(trained):
    g = torch.Generator().manual_seed(4)
    table = _table(g, 12)
    pred = ExpertPredictor(L, E, K, bigram_min_count=1)
    if trained:  # untrained: every rate ties at K/E, so the batched top-k must break ties alike too
        seq = torch.randint(0, 12, (200,), generator=g)
        pred.update_sequence(seq, table[seq])
    trees = [build_tree(int(torch.randint(12, (1,), generator=g)), torch.randn(4, 12, generator=g).log_softmax(-1),
                        budget=int(torch.randint(1, 14, (1,), generator=g)), width=3) for _ in range(7)]
    prevs = [int(torch.randint(-1, 12, (1,), generator=g)) for _ in trees]
    batched = pred.predict_trees(trees, prevs)
    assert len(batched) == len(trees) and pred.predict_trees([], []) == []
    for t, p, b in zip(trees, prevs, batched):
        assert torch.equal(b, pred.predict_tree(t, p))
    with pytest.raises(ValueError, match="2 root_prev_tokens for 7 trees"):
        pred.predict_trees(trees, prevs[:2])


def _eager_rates(tokens, routed, half_life, s):
    """The same model computed directly: weights 0.5^(age / half_life), no pair level."""
    m = len(tokens)
    w = torch.tensor([0.5 ** ((m - 1 - j) / half_life) for j in range(m)], dtype=torch.float64)
    hot = torch.zeros(m, L, E, dtype=torch.float64).scatter_(2, routed, 1.0)
    glob = (hot * w[:, None, None]).sum(0) / w.sum()
    out = {}
    for t in set(tokens.tolist()):
        sel = tokens == t
        c = (hot[sel] * w[sel, None, None]).sum(0)
        out[t] = (c + s * glob) / (w[sel].sum() + s)
    return out, glob


@pytest.mark.parametrize("half_life", [3.0, 50.0])
def test_lazy_decay_matches_eager_decay(half_life):
    # half_life 3 over 400 tokens forces the chunked update and the rescaling of the lazy weights
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 6, (400,), generator=g)
    routed = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(400 * L)]).view(400, L, K)
    pred = ExpertPredictor(L, E, K, half_life=half_life, prior_strength=0.5, use_bigram=False)
    for part in range(0, 400, 37):  # several updates of uneven size
        pred.update(tokens[part: part + 37], routed[part: part + 37])
    rates, glob = _eager_rates(tokens, routed, half_life, 0.5)
    got = pred.predict_rates(torch.arange(6))
    for t in range(6):
        assert torch.allclose(got[t], rates[t], rtol=1e-9, atol=1e-12)
    assert torch.allclose(pred.global_rates(), glob, rtol=1e-9)


def test_decay_follows_drift_and_no_decay_keeps_the_majority():
    a = torch.tensor([[0, 1]] * L)
    b = torch.tensor([[4, 5]] * L)
    tok = torch.tensor([9])
    fast, never = ExpertPredictor(L, E, K, half_life=2.0), ExpertPredictor(L, E, K, half_life=None)
    for p in (fast, never):
        for _ in range(20):
            p.update(tok, a[None])
        for _ in range(6):
            p.update(tok, b[None])
    assert fast.predict(tok)[0].sort(-1).values.tolist() == [[4, 5]] * L
    assert never.predict(tok)[0].sort(-1).values.tolist() == [[0, 1]] * L


def test_row_cap_evicts_the_lightest_row():
    pred = ExpertPredictor(L, E, K, max_rows=2, half_life=None, use_bigram=False)
    r = lambda e: torch.tensor([[[e, e + 1]] * L])  # noqa: E731
    for _ in range(3):
        pred.update(torch.tensor([1]), r(0))
    pred.update(torch.tensor([2]), r(2))
    pred.update(torch.tensor([3]), r(4))  # evicts token 2 (one observation), keeps token 1 (three)
    assert len(pred._tokens.slot) == 2 and 2 not in pred._tokens.slot
    assert pred.predict(torch.tensor([1]))[0].sort(-1).values.tolist() == [[0, 1]] * L
    assert pred.predict(torch.tensor([3]))[0].sort(-1).values.tolist() == [[4, 5]] * L


def test_metrics_by_hand():
    pred = torch.tensor([[[0, 1], [2, 2]], [[3, -1], [4, 5]]])  # [n=2, L=2, K=2]
    actual = torch.tensor([[[1, 0], [2, 3]], [[3, 6], [6, 7]]])
    # predicted sets: {0,1},{2},{3},{4,5} (6 ids); actual: {0,1},{2,3},{3,6},{6,7} (8 ids); hits 0,1,2,3
    assert expert_set_metrics(pred, actual) == (4 / 6, 4 / 8)
    # unions per layer: pred {0,1,3},{2,4,5}; actual {0,1,3,6},{2,3,6,7}; hits 3 + 1
    assert expert_union_metrics(pred, actual) == (4 / 6, 4 / 8)
    with pytest.raises(ValueError, match="same n and L"):
        expert_set_metrics(pred, actual[:1])


def test_bad_inputs_are_named():
    pred = ExpertPredictor(L, E, K)
    with pytest.raises(ValueError, match=r"routed shape \(2, 3, 2\) must be \[m = 3, L = 3, K\]"):
        pred.update(torch.tensor([1, 2, 3]), torch.zeros(2, L, K, dtype=torch.long))
    with pytest.raises(ValueError, match="routed expert id 8 must be < num_experts 8"):
        pred.update(torch.tensor([1]), torch.full((1, L, K), 8))
    with pytest.raises(ValueError, match="token_ids has id -1"):
        pred.predict(torch.tensor([-1]))
    with pytest.raises(ValueError, match="top_k 9 must be in"):
        ExpertPredictor(L, E, 9)


# ---- the real embedded MoE target --------------------------------------------------------------


def test_real_moe_target_token_affinity_beats_global_frequency(moe_routing):
    """Learn from one held-out prompt's routing, predict another's (the target's own routing)."""
    ((train_ids, train_routed), (test_ids, test_routed)), num_experts = moe_routing
    layers, k = train_routed.shape[1:]
    pred = ExpertPredictor(layers, num_experts, k)
    pred.update_sequence(train_ids, train_routed)
    prev = torch.cat([torch.tensor([-1]), test_ids[:-1]])
    precision, recall = expert_set_metrics(pred.predict(test_ids, prev), test_routed)
    base_p, base_r = expert_set_metrics(pred.predict_global(len(test_ids)), test_routed)
    print(f"qwen3moe-tiny: token affinity precision {precision:.3f} recall {recall:.3f}; "
          f"global frequency {base_p:.3f} / {base_r:.3f}")
    assert precision > base_p + 0.1 and recall > base_r + 0.1
    assert precision > 0.45  # measured 0.565 (baseline 0.307) when written


@pytest.fixture(scope="module")
def moe_routing():
    """Two held-out code prompts (<= 64 tokens) and the experts the tiny MoE target routes them to."""
    from transformers import AutoTokenizer, Qwen3MoeForCausalLM

    from sglang_jetspec.model_store import model_path

    torch.set_num_threads(1)
    path = model_path("qwen3moe-tiny")
    tok = AutoTokenizer.from_pretrained(path)
    model = Qwen3MoeForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    heldout = Path(__file__).resolve().parent.parent / "data" / "prompts" / "code.heldout.jsonl"
    prompts = [json.loads(line)["prompt"] for line in heldout.read_text().splitlines()[:2]]
    out = []
    for text in prompts:
        ids = torch.tensor(tok(text).input_ids[:64])
        with torch.no_grad():
            logits = model(ids[None], output_router_logits=True).router_logits  # L x [T, E]
        k = model.config.num_experts_per_tok
        out.append((ids, torch.stack([r.topk(k, dim=-1).indices for r in logits], 1)))  # [T, L, k]
    assert all(r.min() >= 0 for _, r in out)
    return out, model.config.num_experts
