"""Predicted wall time of one speculative decode step, fitted online from observed steps.

Why: the budget controller trades expected committed tokens against step time, and step time
depends on the hardware, the model, the context lengths and the batch, none of which a static
table captures. The model is

    t(bs, rows) = a + b * bs + c * rows (+ q * rows^2)

a: fixed per-step overhead (launches, scheduler, the head forward), b: per-request work
(attention over each request's context, sampling, host bookkeeping), c: per verify row (every
request is padded to the widest tree, so rows = bs * width), q (optional): the convex knee
where the verify turns from memory- to compute-bound. All coefficients are >= 0.

Fit: exponentially forgetting least squares on sufficient statistics (Gram matrix X'X and X'y,
O(p^2) per observation, p <= 4), solved exactly under non-negativity by trying every support
subset (2^p tiny solves; the NNLS optimum is the unconstrained optimum on its own support, so
the best feasible candidate is it). The prior never decays. With a one-off profile of
(rows, seconds) or (bs, rows, seconds) points it is those points as pseudo-observations,
together worth `prior_weight` observations: real measurements, so they may pin the slope far
beyond the widths in use. Without one it is a weak ridge pull (worth 1e-3 * prior_weight of an
observation per coefficient) toward a placeholder model: the fit is defined before data, and a
handful of observations at small widths overrule it (placeholder pseudo-observations at large
widths would not: their leverage fixed the slope against the data, seen on a CPU where a row
costs 5 ms, not the placeholder's 20 us). The prior still decides the directions data cannot
see (a controller that settles on one width observes rows = bs * width only, so per-request and
per-row cost are then collinear in the data). A profile taken at bs = 1 only cannot separate a
from b; the tiny ridge then puts the constant on a.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch

_BS_SCALE, _ROW_SCALE = 4.0, 16.0  # feature scaling: typical features near 1, a well-conditioned Gram
_QUAD_SCALE = 256.0  # rows scale of the quadratic feature (its knee sits at hundreds of rows)
_RIDGE = 1e-3  # weight per coefficient of the placeholder prior, in observations
# placeholder prior when no profile is given: 10 ms per step, +20 us per verify row
_DEFAULT_A, _DEFAULT_C = 10e-3, 20e-6


class StepCostModel:
    """t(bs, rows) in seconds. `observe` after each step, `predict`/`cost` when deciding."""

    def __init__(self, profile: Sequence[tuple] | None = None, quadratic: bool = False,
                 half_life: float | None = 500.0, prior_weight: float = 1.0):
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life {half_life} must be > 0 observations (None = never forget)")
        if not prior_weight > 0:
            raise ValueError(f"prior_weight {prior_weight} must be > 0")
        self.quadratic = quadratic
        self.p = 4 if quadratic else 3
        self.decay = 1.0 if half_life is None else 0.5 ** (1.0 / half_life)
        self.observations = 0
        self._gram = torch.zeros(self.p, self.p, dtype=torch.float64)  # decayed data X'X
        self._xty = torch.zeros(self.p, dtype=torch.float64)  # decayed data X'y
        self._prior_gram = torch.zeros_like(self._gram)
        self._prior_xty = torch.zeros_like(self._xty)
        if not profile:  # weak ridge toward the placeholder coefficients (scaled feature space)
            theta0 = torch.tensor([_DEFAULT_A, 0.0, _DEFAULT_C * _ROW_SCALE] + [0.0] * (self.p - 3),
                                  dtype=torch.float64)
            self._prior_gram += _RIDGE * prior_weight * torch.eye(self.p, dtype=torch.float64)
            self._prior_xty += _RIDGE * prior_weight * theta0
        points = list(profile) if profile else []
        each = prior_weight / max(len(points), 1)  # the whole profile counts as prior_weight observations
        for pt in points:
            if len(pt) == 2:
                bs, rows, sec = 1, pt[0], pt[1]
            elif len(pt) == 3:
                bs, rows, sec = pt
            else:
                raise ValueError(f"profile point {pt!r} must be (rows, seconds) or (bs, rows, seconds)")
            x = self._features(bs, rows)
            _check_seconds(sec)
            self._prior_gram += each * torch.outer(x, x)
            self._prior_xty += each * x * float(sec)
        self._theta: list[float] | None = None

    def _features(self, bs: int, rows: int) -> torch.Tensor:
        if bs < 1 or rows < bs:
            raise ValueError(f"bs {bs} must be >= 1 and rows {rows} >= bs (rows = bs * width)")
        r = rows / _ROW_SCALE
        f = [1.0, bs / _BS_SCALE, r] + ([(rows / _QUAD_SCALE) ** 2] if self.quadratic else [])
        return torch.tensor(f, dtype=torch.float64)

    def observe(self, bs: int, rows: int, seconds: float) -> None:
        """One measured step: bs requests, rows = bs * verify width, seconds of wall time."""
        _check_seconds(seconds)
        x = self._features(int(bs), int(rows))
        self._gram.mul_(self.decay).add_(torch.outer(x, x))
        self._xty.mul_(self.decay).add_(x * float(seconds))
        self.observations += 1
        self._theta = None

    def _fit(self) -> list[float]:
        if self._theta is None:
            gram = self._prior_gram + self._gram
            xty = self._prior_xty + self._xty
            gram = gram + 1e-9 * gram.diagonal().mean() * torch.eye(self.p, dtype=torch.float64)
            self._theta = _nnls_gram(gram, xty)
        return self._theta

    @property
    def coefficients(self) -> dict[str, float]:
        """{a: s, b: s per request, c: s per row, q: s per row^2 (0 unless quadratic)}."""
        th = self._fit()
        return {"a": th[0], "b": th[1] / _BS_SCALE, "c": th[2] / _ROW_SCALE,
                "q": th[3] / _QUAD_SCALE ** 2 if self.quadratic else 0.0}

    def predict(self, bs: int, rows: int) -> float:
        """Predicted seconds of a step with bs requests and rows verify rows (pure Python math:
        the controller calls it for every candidate width)."""
        if bs < 1 or rows < bs:
            raise ValueError(f"bs {bs} must be >= 1 and rows {rows} >= bs (rows = bs * width)")
        k = self.coefficients
        return k["a"] + k["b"] * bs + k["c"] * rows + k["q"] * rows * rows

    def cost(self, bs: int, width: int) -> float:
        """The controller's cost(bs, width) -> seconds: every request padded to `width` rows."""
        return self.predict(bs, bs * width)

    __call__ = cost

    def state_dict(self) -> dict:
        """JSON-able: the fitted coefficients and the number of observations, for logs."""
        return {"coefficients": self.coefficients, "observations": self.observations,
                "quadratic": self.quadratic}


def _check_seconds(seconds) -> None:
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds {seconds!r} must be a finite positive number")


def _nnls_gram(gram: torch.Tensor, xty: torch.Tensor) -> list[float]:
    """argmin_{theta >= 0} theta' G theta - 2 theta' h, exactly, for small p (all supports)."""
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
