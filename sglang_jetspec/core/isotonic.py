"""Weighted non-decreasing least-squares fit (pool adjacent violators), shared by the acceptance
calibrator (P(accept) never falls as the draft score rises) and the width cost table (a wider
verify never costs less)."""

from __future__ import annotations


def isotonic(y: list[float], w: list[float]) -> list[float]:
    """The non-decreasing sequence closest to y in weighted squared error (weights w > 0)."""
    if len(y) != len(w):
        raise ValueError(f"isotonic needs one weight per value, got {len(y)} values and {len(w)} weights")
    blocks: list[list[float]] = []  # [mean, weight, length]
    for yi, wi in zip(y, w):
        blocks.append([float(yi), float(wi), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return [m for m, _, n in blocks for _ in range(int(n))]
