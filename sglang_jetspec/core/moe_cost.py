"""Predicted wall time of one verify forward on a Mixture-of-Experts target, fitted online.

    t = a + b * tokens + c * sum_l distinct_l (+ d * sum_l max_rank_load_l)

Why distinct experts dominate at verify token counts: a verify forward runs a few hundred tokens
at most, and each MoE layer reads the weights of every expert that at least one of those tokens
routes to, once, however many tokens share it (the grouped GEMM streams an expert's
3 * hidden * moe_intermediate weights and multiplies all its tokens against them). At small token
counts that read is memory-bound and costs far more than the arithmetic: Qwen3-30B-A3B reads
9.4 MB per expert and layer in bf16, about 2 us at H200 bandwidth, while the arithmetic for one
more token on an already-loaded expert is a few ns. So adding a node that routes to experts the
batch already uses costs about b (attention, norms, dense parts), and one that pulls in new experts
costs b + c * (new experts). `step_cost.StepCostModel` sees only token counts, which is right for a
dense target and wrong here: two trees of equal size can differ several-fold in expert reads.

Under expert parallelism (EP) each rank holds a slice of the experts and the forward waits for
the slowest rank, so the d term prices the most loaded rank per layer. What "load" means is the
caller's choice, fixed for one model: distinct experts on the rank (weight reads, the usual bound at
verify sizes; `expert_load.ExpertLoad.max_rank_experts`) or its token-expert rows
(`max_rank_tokens`). Without EP pass None and d is not fitted.

Fit: the same exponentially forgetting non-negative least squares as `step_cost` (sufficient
statistics X'X, X'y; exact NNLS over all supports: `online_nnls.ForgettingNNLS`), with an optional
startup profile as non-decaying pseudo-observations, or else a weak ridge pull toward a
placeholder model that a handful of real observations overrule.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .online_nnls import ForgettingNNLS, check_seconds

_TOKEN_SCALE = 16.0  # feature scaling: typical features near 1, a well-conditioned Gram
# placeholder (seconds): 10 ms fixed, 20 us per token, 2 us per (layer, distinct expert), 0 for EP
_DEFAULT = {"a": 10e-3, "b": 20e-6, "c": 2e-6, "d": 0.0}


def _total(per_layer, num_layers: int, name: str) -> float:
    """Sum of a per-layer count ([L] tensor or sequence), checked."""
    t = torch.as_tensor(per_layer, dtype=torch.float64)
    if tuple(t.shape) != (num_layers,):
        raise ValueError(f"{name} shape {tuple(t.shape)} must be [L = {num_layers}]")
    if bool((t < 0).any()):
        raise ValueError(f"{name} {t.tolist()} must be >= 0")
    return float(t.sum())


class MoeVerifyCostModel:
    """t(tokens, distinct experts per layer[, most loaded EP rank per layer]) in seconds.
    `observe` after each verify, `predict` when scheduling; `coefficients` for marginal costs."""

    def __init__(self, num_layers: int, top_k: int, expert_parallel: bool = False,
                 profile: Sequence[tuple] | None = None, half_life: float | None = 500.0,
                 prior_weight: float = 1.0):
        if num_layers < 1 or top_k < 1:
            raise ValueError(f"num_layers {num_layers} and top_k {top_k} must be >= 1")
        self.L, self.expert_parallel = num_layers, expert_parallel
        self.p = 4 if expert_parallel else 3
        # one token's own expert reads: the natural unit of the expert features
        self._scales = [1.0, _TOKEN_SCALE, float(num_layers * top_k), float(num_layers * top_k)][: self.p]
        self._lsq = ForgettingNNLS(self.p, half_life, prior_weight)
        points = []
        for pt in profile or []:
            if len(pt) == 3:
                tokens, distinct, load, sec = pt[0], pt[1], None, pt[2]
            elif len(pt) == 4:
                tokens, distinct, load, sec = pt
            else:
                raise ValueError(f"profile point {pt!r} must be (tokens, distinct [L], seconds) or "
                                 "(tokens, distinct [L], max_rank_load [L], seconds)")
            points.append((self._features(tokens, distinct, load), sec))
        if not points:
            self._lsq.ridge_prior([v * s for v, s in zip(_DEFAULT.values(), self._scales)])
        self._lsq.profile_prior(points)

    @property
    def observations(self) -> int:
        return self._lsq.observations

    def _features(self, tokens: int, distinct_per_layer, max_rank_load_per_layer=None) -> torch.Tensor:
        if tokens < 1:
            raise ValueError(f"tokens {tokens} must be >= 1 (the root is always verified)")
        raw = [1.0, float(tokens), _total(distinct_per_layer, self.L, "distinct_per_layer")]
        if self.expert_parallel:
            if max_rank_load_per_layer is None:
                raise ValueError("expert_parallel=True needs max_rank_load_per_layer [L]")
            raw.append(_total(max_rank_load_per_layer, self.L, "max_rank_load_per_layer"))
        elif max_rank_load_per_layer is not None:
            raise ValueError("max_rank_load_per_layer given but the model was built with expert_parallel=False")
        return torch.tensor([r / s for r, s in zip(raw, self._scales)], dtype=torch.float64)

    def observe(self, tokens: int, distinct_per_layer, seconds: float, max_rank_load_per_layer=None) -> None:
        """One measured verify: tokens rows, the distinct experts each layer activated, seconds of
        wall time (and under EP the most loaded rank's load per layer)."""
        check_seconds(seconds)
        self._lsq.observe(self._features(int(tokens), distinct_per_layer, max_rank_load_per_layer), seconds)

    @property
    def coefficients(self) -> dict[str, float]:
        """{a: s, b: s per token, c: s per (layer, distinct expert), d: s per (layer, load unit on
        the most loaded rank), 0 without EP}; all >= 0."""
        th = [t / s for t, s in zip(self._lsq.solve(), self._scales)] + [0.0] * (4 - self.p)
        return dict(zip("abcd", th))

    def predict(self, tokens: int, distinct_per_layer, max_rank_load_per_layer=None) -> float:
        """Predicted seconds of a verify over `tokens` rows activating distinct_per_layer [L] experts
        (max_rank_load_per_layer [L] under EP, else None)."""
        x = self._features(int(tokens), distinct_per_layer, max_rank_load_per_layer)
        return float(x @ torch.tensor(self._lsq.solve(), dtype=torch.float64))

    def state_dict(self) -> dict:
        """JSON-able: the fitted coefficients and the number of observations, for logs."""
        return {"coefficients": self.coefficients, "observations": self.observations,
                "expert_parallel": self.expert_parallel, "num_layers": self.L}
