"""Exponentially forgetting non-negative least squares, kept as sufficient statistics.

The step-time model of dense targets (step_cost.py) and the verify-cost model of MoE targets
(moe_cost.py) fit the same way and differ only in their features: each observation x (scaled
features, [p]) with its measured seconds y updates the decayed X'X and X'y (O(p^2), p <= 4); the
fit is the exact NNLS optimum over all supports. A prior that never decays is either a profile
(real measurements as pseudo-observations, together worth `prior_weight` observations) or a weak
ridge pull toward placeholder coefficients (1e-3 * prior_weight of an observation per
coefficient) that a handful of real observations overrule.
"""

from __future__ import annotations

import itertools
import math

import torch

RIDGE = 1e-3  # weight per coefficient of a placeholder prior, in observations


def check_seconds(seconds) -> None:
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds {seconds!r} must be a finite positive number")


class ForgettingNNLS:
    def __init__(self, p: int, half_life: float | None = 500.0, prior_weight: float = 1.0):
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life {half_life} must be > 0 observations (None = never forget)")
        if not prior_weight > 0:
            raise ValueError(f"prior_weight {prior_weight} must be > 0")
        self.p, self.prior_weight = p, prior_weight
        self.decay = 1.0 if half_life is None else 0.5 ** (1.0 / half_life)
        self.observations = 0
        self._gram = torch.zeros(p, p, dtype=torch.float64)  # decayed data X'X
        self._xty = torch.zeros(p, dtype=torch.float64)  # decayed data X'y
        self._prior_gram = torch.zeros_like(self._gram)
        self._prior_xty = torch.zeros_like(self._xty)
        self._theta: list[float] | None = None
        self._support: list[int] | None = None  # positive coefficients of the last solution

    def ridge_prior(self, theta0: list[float]) -> None:
        """Weak pull toward placeholder coefficients theta0 (in the scaled feature space)."""
        self._prior_gram += RIDGE * self.prior_weight * torch.eye(self.p, dtype=torch.float64)
        self._prior_xty += RIDGE * self.prior_weight * torch.tensor(theta0, dtype=torch.float64)
        self._theta = None

    def profile_prior(self, points: list[tuple[torch.Tensor, float]]) -> None:
        """Measured (x [p], seconds) points as non-decaying pseudo-observations worth prior_weight."""
        each = self.prior_weight / max(len(points), 1)
        for x, sec in points:
            check_seconds(sec)
            self._prior_gram += each * torch.outer(x, x)
            self._prior_xty += each * x * float(sec)
        self._theta = None

    def observe(self, x: torch.Tensor, seconds: float) -> None:
        check_seconds(seconds)
        self._gram.mul_(self.decay).add_(torch.outer(x, x))
        self._xty.mul_(self.decay).add_(x * float(seconds))
        self.observations += 1
        self._theta = None

    def solve(self) -> list[float]:
        """The scaled coefficients (>= 0), cached until the next update."""
        if self._theta is None:
            gram = self._prior_gram + self._gram
            gram = gram + 1e-9 * gram.diagonal().mean() * torch.eye(self.p, dtype=torch.float64)
            xty = self._prior_xty + self._xty
            # warm start: the data move a little per round, so the last solution's support is
            # usually still the optimal one (measured: the unconstrained shortcut failed in 87
            # of 100 rounds of a batch-1 policy, and the support search cost 0.7 ms a round)
            theta = None if self._support is None else kkt_on_support(gram, xty, self._support)
            self._theta = theta if theta is not None else nnls_gram(gram, xty)
            self._support = [i for i, v in enumerate(self._theta) if v > 0]
        return self._theta


def nnls_gram(gram: torch.Tensor, xty: torch.Tensor) -> list[float]:
    """argmin_{theta >= 0} theta' G theta - 2 theta' h, exactly, for small p (all supports)."""
    p = gram.shape[0]
    # the objective is convex: when its unconstrained minimum is feasible it is the answer (one
    # solve instead of 2^p - 1; the usual case once the data pin every coefficient positive)
    try:
        sol = torch.linalg.solve(gram, xty)
        if bool((sol >= 0).all()) and bool(torch.isfinite(sol).all()):
            return sol.tolist()
    except RuntimeError:  # singular: the support search below
        pass
    return nnls_by_supports(gram, xty)


def kkt_on_support(gram: torch.Tensor, xty: torch.Tensor, support: list[int]) -> list[float] | None:
    """The NNLS optimum if it has exactly this support (the support's unconstrained optimum is
    positive and no coefficient off the support wants to grow: the KKT conditions of the convex
    problem, so the answer is exact), else None."""
    p = gram.shape[0]
    theta = torch.zeros(p, dtype=torch.float64)
    if support:
        try:
            sol = torch.linalg.solve(gram[support][:, support], xty[support])
        except RuntimeError:
            return None
        if not (bool((sol > 0).all()) and bool(torch.isfinite(sol).all())):
            return None
        theta[support] = sol
    grad = gram @ theta - xty  # half the gradient of theta' G theta - 2 theta' h
    off = [i for i in range(p) if i not in support]
    if off and bool((grad[off] < -1e-12 * (1 + float(xty.abs().max()))).any()):
        return None
    return theta.tolist()


def nnls_by_supports(gram: torch.Tensor, xty: torch.Tensor) -> list[float]:
    """The plain reference: the best feasible support optimum over all 2^p - 1 supports."""
    p = gram.shape[0]
    best, best_val = [0.0] * p, 0.0  # theta = 0 has objective 0
    for k in range(1, p + 1):
        for support in itertools.combinations(range(p), k):
            s = list(support)
            try:
                sol = torch.linalg.solve(gram[s][:, s], xty[s])
            except RuntimeError:  # singular on this support: another support covers it
                continue
            if bool((sol < 0).any()):
                continue
            val = -float(sol @ xty[s])  # at the support optimum, objective = -theta' h
            if val < best_val:
                theta = [0.0] * p
                for i, v in zip(s, sol.tolist()):
                    theta[i] = v
                best, best_val = theta, val
    return best
