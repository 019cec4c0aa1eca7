"""Greedy parity between two token streams, telling a floating-point near-tie from a bug.

Tree verification and one-token-at-a-time decoding add the same numbers in different orders,
so fp32 logits differ by ~3e-5. Where the target's top-2 logits are closer than that, greedy
decoding may legitimately pick either token. A divergence is a NEAR-TIE when, at the first
differing position, both tokens are the target's top-2 under a fresh sequential forward and their
logits are within ``tie_tol``; anything else is a real mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_TIE_TOL = 2e-4


@dataclass
class ParityReport:
    identical: bool
    first_diff: int | None = None    # index into the generated tokens
    near_tie: bool = False
    gap: float | None = None         # |logit(a) - logit(b)| at first_diff
    detail: str = ""


@torch.no_grad()
def check_parity(model, prompt_ids: list[int], expected: list[int], actual: list[int],
                 tie_tol: float = DEFAULT_TIE_TOL) -> ParityReport:
    """``expected`` is the plain-decoding output; ``model`` is a Hugging Face causal LM."""
    n = min(len(expected), len(actual))
    j = next((i for i in range(n) if expected[i] != actual[i]), None)
    if j is None:
        if len(expected) == len(actual):
            return ParityReport(identical=True)
        return ParityReport(False, n, False, None, f"lengths differ ({len(expected)} vs {len(actual)}) "
                            "with an identical common prefix")
    ids = torch.tensor([prompt_ids + expected[:j]], device=model.device)
    logits = model(input_ids=ids).logits[0, -1].float()
    top2 = torch.topk(logits, 2)
    a, b = expected[j], actual[j]
    gap = float((logits[a] - logits[b]).abs())
    in_top2 = {a, b} == set(top2.indices.tolist())
    near = in_top2 and gap <= tie_tol
    return ParityReport(False, j, near, gap,
                        f"first difference at token {j}: {a} vs {b}, logit gap {gap:.2e}, "
                        f"{'both' if in_top2 else 'NOT both'} in the target's top-2")
