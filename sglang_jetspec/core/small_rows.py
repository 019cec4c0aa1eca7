"""How many rows a packed oneDNN product of 1-6 rows should run with (core/packed_linear.py).

oneDNN runs a one-row product through a matrix-vector kernel and two or more rows through its
matrix-matrix kernels, and on the CPUs measured here the one-row kernel is the slower of the
two: SmolLM2-135M's linear layers (30 layers + lm_head) took 25.8 ms for one row and 22.4 ms for
five on one 2-core AMD EPYC VM (two threads; 44.5 vs 38.2 with one), 10.4 vs 9.0 ms for one vs
four rows on another (`docs/bench/cpu-linear-onednn/`). Which small row count is fastest
differs between machines and thread counts (two rows were the slowest of all on the first VM
and the fastest on the second with one thread), so it is measured: once per process and thread
count, a few passes over 64 MB of packed weights (too much for the cache, as a model's layers
are) at 1..6 rows, and a product of ``m`` rows runs padded with zero rows to the fastest row
count >= m (never fewer than two, so every row of every product takes the same kernel).

The padding does not change the numbers: a row's result is the same whatever the other rows
(checked in tests for 2..9 rows), except that the one-row kernel sums in another order; always
padding one row to two or more therefore makes a plain decode step compute each linear layer
exactly as a tree verify computes that row.

``JETSPEC_CPU_SMALL_ROWS``: ``auto`` (default: measure), ``off`` (run every row count as it is,
one row included), or a row count 2..6 to pad 1..N-1 rows to (no measurement; reproducible).
"""

from __future__ import annotations

import logging
import os
import time
from functools import lru_cache

import torch

logger = logging.getLogger(__name__)

ENV_VAR = "JETSPEC_CPU_SMALL_ROWS"
MAX_SMALL = 6                     # row counts 1..MAX_SMALL are candidates
_PROBE_SHAPE = (1024, 1024)       # 4 MB a weight
_PROBE_WEIGHTS = 16               # 64 MB in all
_PROBE_ROUNDS = 5


def _setting(raw: str) -> str | int:
    raw = raw.strip().lower()
    if raw in ("auto", "off"):
        return raw
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 2 <= n <= MAX_SMALL:
        raise ValueError(f"${ENV_VAR}={raw!r}: expected auto, off or a row count 2..{MAX_SMALL}")
    return n


def measure_small_rows(pack, product, weights: int = _PROBE_WEIGHTS, rounds: int = _PROBE_ROUNDS) -> dict[int, float]:
    """Median seconds of one pass over ``weights`` packed probe weights at 1..MAX_SMALL rows; the
    row counts take turns in every round. ``pack(w)`` / ``product(x, packed, bias)`` are the oneDNN ops."""
    gen = torch.Generator().manual_seed(0)
    packed = [pack(torch.randn(*_PROBE_SHAPE, generator=gen)) for _ in range(weights)]
    xs = {m: torch.randn(m, _PROBE_SHAPE[1], generator=gen) for m in range(1, MAX_SMALL + 1)}
    times: dict[int, list[float]] = {m: [] for m in xs}
    with torch.no_grad():
        for r in range(rounds + 1):
            for m, x in xs.items():
                t = time.perf_counter()
                for p in packed:
                    product(x, p, None)
                if r:  # the first round warms the primitives up
                    times[m].append(time.perf_counter() - t)
    return {m: sorted(v)[len(v) // 2] for m, v in times.items()}


def pad_table(seconds: dict[int, float]) -> dict[int, int]:
    """Row count -> the row count to run it with: the fastest measured count >= it (>= 2)."""
    out = {}
    for m in range(1, MAX_SMALL + 1):
        out[m] = min(range(max(m, 2), MAX_SMALL + 1), key=lambda c: (seconds[c], c))
    return out


@lru_cache(maxsize=8)
def _table_for(raw: str, threads: int, pack, product) -> dict[int, int]:
    """Keyed by the raw environment value: a decode step asks ~200 times, so it only looks up."""
    setting = _setting(raw)
    if setting == "off":
        return {m: m for m in range(1, MAX_SMALL + 1)}
    if isinstance(setting, int):
        return {m: max(m, setting) for m in range(1, MAX_SMALL + 1)}
    seconds = measure_small_rows(pack, product)
    table = pad_table(seconds)
    logger.info("oneDNN small products (%d threads): ms a pass at 1..%d rows %s -> run with %s",
                threads, MAX_SMALL, [round(1e3 * seconds[m], 2) for m in sorted(seconds)], table)
    return table


def rows_to_run(m: int, pack, product) -> int:
    """The row count a product of ``m`` rows (1..MAX_SMALL) runs with; larger ``m`` unchanged."""
    if m > MAX_SMALL:
        return m
    return _table_for(os.environ.get(ENV_VAR, "auto"), torch.get_num_threads(), pack, product)[m]
