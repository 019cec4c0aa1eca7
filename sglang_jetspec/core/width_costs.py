"""Seconds of a decode step at every verify width, for one batch size: measured round times
where the width has run, the fitted cost model elsewhere, made consistent with each other.

Why: the width policy prices widths by the measured mean round time once it has some (the
linear cost model misprices real rounds: a CPU verify row costs more once a batch's rows make
the matmuls compute-bound; an MoE round's price jumps with the distinct experts). But those
means are noisy where a width ran a few rounds, at other context lengths, on a shared machine:
on the MoE target the table read 54.9 ms at width 3, 46.8 at 4 and 42.4 at 5 at batch 1, and
the choice between widths 9 and 16 (true step times 56.6 and 58 ms) turned on noise of that
size. Two facts cut the noise without a model of the hardware:
  - a wider verify never costs less (more rows, more head rows, more experts): the measured
    widths are fitted by a non-decreasing sequence (weighted pool adjacent violators);
  - a mean of n rounds is worth n observations against the model's `prior_rounds`: each
    measured width is shrunk toward the model's price by n / (n + prior_rounds).
A width that has not run takes the model's price, clamped between the fitted prices of the
nearest measured widths below and above it, so the table stays non-decreasing.
"""

from __future__ import annotations

from typing import Callable, Mapping

from .isotonic import isotonic


def width_costs(max_width: int, measured: Mapping[int, tuple[float, float]],
                model: Callable[[int], float], prior_rounds: float = 2.0) -> list[float]:
    """[max_width] seconds; entry w - 1 prices width w. measured: width -> (mean seconds,
    rounds); model(width) -> seconds (non-decreasing in width)."""
    if max_width < 1:
        raise ValueError(f"max_width {max_width} must be >= 1")
    if not prior_rounds > 0:
        raise ValueError(f"prior_rounds {prior_rounds} must be > 0")
    modelled = [float(model(w)) for w in range(1, max_width + 1)]
    seen = sorted(w for w, (_, n) in measured.items() if 1 <= w <= max_width and n > 0)
    if not seen:
        return modelled
    values, weights = [], []
    for w in seen:
        mean, n = measured[w]
        values.append((n * mean + prior_rounds * modelled[w - 1]) / (n + prior_rounds))
        weights.append(n + prior_rounds)
    fitted = dict(zip(seen, isotonic(values, weights)))
    out, lo, i = [], 0.0, 0
    for w in range(1, max_width + 1):
        if w in fitted:
            lo = fitted[w]
            out.append(lo)
            i += 1
            continue
        hi = fitted[seen[i]] if i < len(seen) else float("inf")
        out.append(min(max(modelled[w - 1], lo), hi))
    return out
