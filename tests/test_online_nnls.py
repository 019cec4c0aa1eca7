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
