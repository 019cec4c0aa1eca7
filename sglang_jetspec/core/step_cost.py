"""Predicted wall time of one speculative decode step, fitted online from observed steps.

Why: the budget controller trades expected committed tokens against step time, and step time
depends on the hardware, the model, the context lengths and the batch, none of which a static
table captures. The model is

    t(bs, rows) = a + b * bs + c * rows (+ d * draft_rows) (+ q * rows^2)

a: fixed per-step overhead (launches, scheduler, the head forward), b: per-request work
(attention over each request's context, sampling, host bookkeeping), c: per verify row (every
request is padded to the widest tree, so rows = bs * width), d (when `draft_depth` is given):
per head row, draft_rows = bs * min(draft_depth, width - 1) (the head drafts only the depths a
tree of `width` nodes can reach, so beyond width draft_depth + 1 the draft stops growing; on a
CPU a head row, with its lm_head over the vocabulary, cost more than a verify row, and a model
without this term priced wide trees at the small widths' per-row slope), q (optional): the
convex knee where the verify turns from memory- to compute-bound. All coefficients are >= 0.
Below width draft_depth + 1, draft_rows = rows - bs: c and d are told apart only by steps at
wider widths (exploration), and the tiny ridge splits them until then (their sum is what
matters there).

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

from typing import Sequence

import torch

from .online_nnls import ForgettingNNLS, check_seconds

_BS_SCALE, _ROW_SCALE = 4.0, 16.0  # feature scaling: typical features near 1, a well-conditioned Gram
_QUAD_SCALE = 256.0  # rows scale of the quadratic feature (its knee sits at hundreds of rows)
# placeholder prior when no profile is given: 10 ms per step, +20 us per verify row
_DEFAULT_A, _DEFAULT_C = 10e-3, 20e-6


class StepCostModel:
    """t(bs, rows) in seconds. `observe` after each step, `predict`/`cost` when deciding."""

    def __init__(self, profile: Sequence[tuple] | None = None, quadratic: bool = False,
                 half_life: float | None = 500.0, prior_weight: float = 1.0,
                 draft_depth: int | None = None):
        if draft_depth is not None and draft_depth < 1:
            raise ValueError(f"draft_depth {draft_depth} must be >= 1 (or None: no draft term)")
        self.quadratic, self.draft_depth = quadratic, draft_depth
        self.p = 3 + (draft_depth is not None) + quadratic
        self._lsq = ForgettingNNLS(self.p, half_life, prior_weight)
        if not profile:  # weak ridge toward the placeholder coefficients (scaled feature space)
            self._lsq.ridge_prior([_DEFAULT_A, 0.0, _DEFAULT_C * _ROW_SCALE] + [0.0] * (self.p - 3))
        points = []
        for pt in profile or []:
            if len(pt) == 2:
                bs, rows, sec = 1, pt[0], pt[1]
            elif len(pt) == 3:
                bs, rows, sec = pt
            else:
                raise ValueError(f"profile point {pt!r} must be (rows, seconds) or (bs, rows, seconds)")
            points.append((self._features(bs, rows), sec))
        self._lsq.profile_prior(points)

    @property
    def observations(self) -> int:
        return self._lsq.observations

    def _features(self, bs: int, rows: int) -> torch.Tensor:
        if bs < 1 or rows < bs:
            raise ValueError(f"bs {bs} must be >= 1 and rows {rows} >= bs (rows = bs * width)")
        f = [1.0, bs / _BS_SCALE, rows / _ROW_SCALE]
        if self.draft_depth is not None:
            f.append(self.draft_rows(bs, rows) / _ROW_SCALE)
        if self.quadratic:
            f.append((rows / _QUAD_SCALE) ** 2)
        return torch.tensor(f, dtype=torch.float64)

    def draft_rows(self, bs: int, rows: int) -> int:
        """Head rows of a step: bs * min(draft_depth, width - 1), width = rows // bs."""
        return bs * min(self.draft_depth or 0, rows // bs - 1)

    def observe(self, bs: int, rows: int, seconds: float) -> None:
        """One measured step: bs requests, rows = bs * verify width, seconds of wall time."""
        check_seconds(seconds)
        self._lsq.observe(self._features(int(bs), int(rows)), seconds)

    @property
    def coefficients(self) -> dict[str, float]:
        """{a: s, b: s per request, c: s per verify row, d: s per head row (0 without
        draft_depth), q: s per row^2 (0 unless quadratic)}."""
        th = self._lsq.solve()
        d = th[3] / _ROW_SCALE if self.draft_depth is not None else 0.0
        return {"a": th[0], "b": th[1] / _BS_SCALE, "c": th[2] / _ROW_SCALE, "d": d,
                "q": th[-1] / _QUAD_SCALE ** 2 if self.quadratic else 0.0}

    def predict(self, bs: int, rows: int) -> float:
        """Predicted seconds of a step with bs requests and rows verify rows (pure Python math:
        the controller calls it for every candidate width)."""
        if bs < 1 or rows < bs:
            raise ValueError(f"bs {bs} must be >= 1 and rows {rows} >= bs (rows = bs * width)")
        return self._seconds(self.coefficients, bs, rows)

    def _seconds(self, k: dict[str, float], bs: int, rows: int) -> float:
        draft = self.draft_rows(bs, rows) if self.draft_depth is not None else 0
        return k["a"] + k["b"] * bs + k["c"] * rows + k["d"] * draft + k["q"] * rows * rows

    def cost(self, bs: int, width: int) -> float:
        """The controller's cost(bs, width) -> seconds: every request padded to `width` rows."""
        return self.predict(bs, bs * width)

    __call__ = cost

    def costs(self, bs: int, max_width: int) -> list[float]:
        """cost(bs, w) for w = 1..max_width with one solve of the fit (the width policy
        prices every width each round)."""
        if bs < 1 or max_width < 1:
            raise ValueError(f"bs {bs} and max_width {max_width} must be >= 1")
        k = self.coefficients
        return [self._seconds(k, bs, bs * w) for w in range(1, max_width + 1)]

    def state_dict(self) -> dict:
        """JSON-able: the fitted coefficients and the number of observations, for logs."""
        return {"coefficients": self.coefficients, "observations": self.observations,
                "quadratic": self.quadratic, "draft_depth": self.draft_depth}
