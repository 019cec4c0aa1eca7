"""The target and draft distributions that lossless acceptance must reproduce.

Lossless speculative sampling is only lossless with respect to ONE distribution: the one the
serving engine would have sampled from without speculation. `target_distribution` therefore
reproduces SGLang 0.5.23's sampler (`sglang/srt/layers/sampler.py`, pytorch backend,
`top_k_top_p_min_p_sampling_from_probs_torch`) as an explicit probability table:

1. probs = softmax(logits / temperature), in fp32;
2. sort descending; keep ranks < top_k;
3. top-p uses the exclusive prefix mass of the UNFILTERED sorted probs (not re-normalised after
   top-k): a token is dropped when (mass of the tokens ranked above it) > top_p, so the top-1 token
   always survives;
4. min-p drops tokens with prob < min_p * (max prob); max prob is unchanged by 2-3;
5. renormalise (SGLang leaves this to `torch.multinomial`).

A filter is skipped entirely when it is disabled (top_k -1 or >= V, top_p 1.0, min_p 0.0), as
SGLang's `need_*_sampling` flags skip it; so top_p = 1.0 never drops a tail token to rounding.
Ties: SGLang's `probs.sort` is not stable, so which of several equal probabilities survives a
top-k cut is unspecified there; we use a stable sort (the lowest token id wins) to be
deterministic. Known divergence: SGLang's flashinfer backend WITH min_p applies top-k and top-p
sequentially (top-p on the top-k-renormalised probs); its joint top-k/top-p path and the pytorch
backend agree with this function.
"""

from __future__ import annotations

import math

import torch


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(
            f"temperature {temperature} must be a finite number > 0 (greedy decoding uses accept_greedy)"
        )


def _check_logits(logits: torch.Tensor, name: str) -> None:
    if logits.dim() != 2 or not logits.is_floating_point() or logits.shape[1] < 1:
        raise ValueError(
            f"{name} must be a 2-D float tensor [n, V] with V >= 1, got shape "
            f"{tuple(logits.shape)} dtype {logits.dtype}"
        )


def target_distribution(
    logits: torch.Tensor,  # [n, V]
    temperature: float,
    top_k: int = -1,
    top_p: float = 1.0,
    min_p: float = 0.0,
) -> torch.Tensor:
    """[n, V] fp32 probabilities SGLang samples the next token from (see module docstring)."""
    _check_logits(logits, "logits")
    _check_temperature(temperature)
    if top_k != -1 and top_k < 1:
        raise ValueError(f"top_k {top_k} must be -1 (disabled) or >= 1")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p {top_p} must be in (0, 1]")
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p {min_p} must be in [0, 1]")

    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [n, V]
    vocab = probs.shape[1]
    need_top_k = top_k != -1 and top_k < vocab
    if not (need_top_k or top_p < 1.0 or min_p > 0.0):
        return probs

    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)  # [n, V]
    keep = torch.ones_like(sorted_p, dtype=torch.bool)  # [n, V], in sorted order
    if need_top_k:
        keep[:, top_k:] = False
    if top_p < 1.0:
        mass_above = sorted_p.cumsum(dim=-1) - sorted_p  # exclusive prefix mass, unfiltered
        keep &= mass_above <= top_p
    if min_p > 0.0:
        keep &= sorted_p >= sorted_p[:, :1] * min_p
    filtered = torch.zeros_like(probs).scatter_(1, order, sorted_p * keep)  # [n, V]
    return filtered / filtered.sum(dim=-1, keepdim=True)


def draft_distribution(draft_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """[D, V] fp32 draft probabilities q: softmax at the request's temperature.

    No top-k/top-p here: the acceptance rule is lossless for any q with the drafts drawn from it,
    and a q with full support never runs out of distinct tokens for a wide sibling group.
    """
    _check_logits(draft_logits, "draft_logits")
    _check_temperature(temperature)
    return torch.softmax(draft_logits.float() / temperature, dim=-1)
