"""MoE verify cost model: recovers known costs, stays non-negative, uses a profile, checks inputs."""

import pytest
import torch

from sglang_jetspec.core.moe_cost import MoeVerifyCostModel


L = 4


def _points(g, count, ep=False):
    """Random verify shapes: tokens, distinct experts per layer, most loaded rank per layer."""
    out = []
    for _ in range(count):
        tokens = int(torch.randint(1, 64, (1,), generator=g))
        distinct = torch.randint(2, 33, (L,), generator=g)
        load = torch.randint(1, 9, (L,), generator=g) if ep else None
        out.append((tokens, distinct, load))
    return out


def test_recovers_token_and_expert_costs_and_separates_equal_token_counts():
    truth = dict(a=4e-3, b=50e-6, c=30e-6)
    model = MoeVerifyCostModel(L, top_k=2)
    g = torch.Generator().manual_seed(0)
    for tokens, distinct, _ in _points(g, 40):
        sec = truth["a"] + truth["b"] * tokens + truth["c"] * float(distinct.sum())
        model.observe(tokens, distinct, sec)
    k = model.coefficients
    for name, val in truth.items():
        assert k[name] == pytest.approx(val, rel=0.02), (name, k)
    assert k["d"] == 0.0
    # same token count, four times the expert reads: the model must price the difference
    few, many = model.predict(16, [4] * L), model.predict(16, [16] * L)
    assert many - few == pytest.approx(truth["c"] * 12 * L, rel=0.02)


def test_expert_parallel_term_is_fitted():
    truth = dict(a=2e-3, b=10e-6, c=5e-6, d=80e-6)
    model = MoeVerifyCostModel(L, top_k=2, expert_parallel=True)
    g = torch.Generator().manual_seed(1)
    for tokens, distinct, load in _points(g, 50, ep=True):
        sec = truth["a"] + truth["b"] * tokens + truth["c"] * float(distinct.sum()) + truth["d"] * float(load.sum())
        model.observe(tokens, distinct, sec, max_rank_load_per_layer=load)
    k = model.coefficients
    for name, val in truth.items():
        assert k[name] == pytest.approx(val, rel=0.03), (name, k)
    assert model.predict(8, [8] * L, [2] * L) < model.predict(8, [8] * L, [6] * L)


def test_coefficients_stay_non_negative():
    # time falls with tokens in this (noisy) data: the fit must clamp b at 0, not go negative
    model = MoeVerifyCostModel(L, top_k=2)
    g = torch.Generator().manual_seed(2)
    for tokens, distinct, _ in _points(g, 30):
        sec = 5e-3 - 1e-5 * tokens + 2e-5 * float(distinct.sum())
        model.observe(tokens, distinct, max(sec, 1e-4))
    k = model.coefficients
    assert min(k.values()) >= 0.0
    assert k["b"] == 0.0


def test_profile_is_used_before_any_observation():
    truth = lambda t, dist: 1e-3 + 2e-5 * t + 1e-5 * sum(dist)  # noqa: E731
    g = torch.Generator().manual_seed(3)
    profile = [(t, d.tolist(), truth(t, d.tolist())) for t, d, _ in _points(g, 12)]
    model = MoeVerifyCostModel(L, top_k=2, profile=profile)
    assert model.observations == 0
    assert model.predict(40, [20] * L) == pytest.approx(truth(40, [20] * L), rel=0.01)


def test_placeholder_prior_is_sane_and_data_overrules_it():
    model = MoeVerifyCostModel(L, top_k=2)
    assert 0 < model.predict(1, [2] * L) < model.predict(1, [8] * L)
    for _ in range(5):  # a CPU where every verify takes 0.2 s regardless
        model.observe(8, [6] * L, 0.2)
    assert model.predict(8, [6] * L) == pytest.approx(0.2, rel=0.01)


def test_bad_inputs_are_named():
    model = MoeVerifyCostModel(L, top_k=2)
    with pytest.raises(ValueError, match=r"distinct_per_layer shape \(3,\) must be \[L = 4\]"):
        model.predict(4, [1, 2, 3])
    with pytest.raises(ValueError, match="tokens 0 must be >= 1"):
        model.predict(0, [1] * L)
    with pytest.raises(ValueError, match="expert_parallel=False"):
        model.predict(4, [1] * L, [1] * L)
    with pytest.raises(ValueError, match="seconds"):
        model.observe(4, [1] * L, -1.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        model.observe(4, [1, -1, 1, 1], 0.1)
    ep = MoeVerifyCostModel(L, top_k=2, expert_parallel=True)
    with pytest.raises(ValueError, match="needs max_rank_load_per_layer"):
        ep.predict(4, [1] * L)
    with pytest.raises(ValueError, match="profile point"):
        MoeVerifyCostModel(L, top_k=2, profile=[(4, [1] * L)])
