"""core/online_nnls.py: the fast path of the exact NNLS (one unconstrained solve when its
optimum is feasible) against the plain search over every support, on random problems."""

import pytest
import torch

from sglang_jetspec.core.online_nnls import nnls_by_supports, nnls_gram


def _objective(gram, xty, theta):
    t = torch.tensor(theta, dtype=torch.float64)
    return float(t @ gram @ t - 2 * t @ xty)


@pytest.mark.parametrize("seed", range(40))
def test_fast_nnls_equals_the_support_search(seed):
    g = torch.Generator().manual_seed(seed)
    p = 2 + seed % 4
    x = torch.rand(30, p, generator=g, dtype=torch.float64)
    true = torch.randn(p, generator=g, dtype=torch.float64)  # some coefficients negative
    if seed % 2:
        true = true.abs()  # all positive: the shortcut's case
    y = x @ true + 0.01 * torch.randn(30, generator=g, dtype=torch.float64)
    gram, xty = x.T @ x + 1e-6 * torch.eye(p, dtype=torch.float64), x.T @ y
    fast, ref = nnls_gram(gram, xty), nnls_by_supports(gram, xty)
    assert min(fast) >= 0
    assert _objective(gram, xty, fast) == pytest.approx(_objective(gram, xty, ref), abs=1e-9)
    assert fast == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("seed", range(40))
def test_the_warm_start_on_a_support_is_exact_or_declines(seed):
    """kkt_on_support returns the optimum when the support is the optimal one and None for
    any other support (or the same answer, when a different support also satisfies KKT)."""
    import itertools

    from sglang_jetspec.core.online_nnls import kkt_on_support

    g = torch.Generator().manual_seed(100 + seed)
    p = 2 + seed % 4
    x = torch.rand(30, p, generator=g, dtype=torch.float64)
    true = torch.randn(p, generator=g, dtype=torch.float64)
    y = x @ true + 0.01 * torch.randn(30, generator=g, dtype=torch.float64)
    gram, xty = x.T @ x + 1e-6 * torch.eye(p, dtype=torch.float64), x.T @ y
    ref = nnls_by_supports(gram, xty)
    optimal = [i for i, v in enumerate(ref) if v > 0]
    assert kkt_on_support(gram, xty, optimal) == pytest.approx(ref, abs=1e-6)
    for k in range(p + 1):
        for support in itertools.combinations(range(p), k):
            got = kkt_on_support(gram, xty, list(support))
            if got is not None:
                assert _objective(gram, xty, got) == pytest.approx(_objective(gram, xty, ref), abs=1e-9)


def test_the_online_fit_with_warm_starts_tracks_the_reference_round_by_round():
    from sglang_jetspec.core.online_nnls import ForgettingNNLS

    g = torch.Generator().manual_seed(7)
    fit = ForgettingNNLS(4, half_life=50.0)
    fit.ridge_prior([0.01, 0.0, 0.0, 0.0])
    for r in range(300):
        x = torch.rand(4, generator=g, dtype=torch.float64)
        true = torch.tensor([0.02, 0.0 if r < 150 else 0.01, 0.03, 0.0], dtype=torch.float64)
        fit.observe(x, float(x @ true) + 1e-3 * float(torch.rand(1, generator=g)))
        gram = fit._prior_gram + fit._gram
        gram = gram + 1e-9 * gram.diagonal().mean() * torch.eye(4, dtype=torch.float64)
        ref = nnls_by_supports(gram, fit._prior_xty + fit._xty)
        assert fit.solve() == pytest.approx(ref, abs=1e-7), r
