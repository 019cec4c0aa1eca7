"""The price expert-aware pruning keeps nodes at, from the held loss bound.

Pruning each round down to a fixed share of its own expected tokens (`max_expected_loss`) gives
every round the same relative loss, however much verify time its last nodes cost. A price shared
by all rounds (keep a node while it brings at least `price` expected tokens per predicted second;
`expert_aware_tree.schedule_batch(price=...)`) is the Lagrangian of "least verify time for a
given accepted-length loss over all rounds": the loss goes where pruning saves the most. Replayed
on two 64-expert traces, holding 3% with the same controller, it cut 0.9-2.3 points more of the
experts that price a verify at -0.2 to +0.4 points of accepted-length loss (one device and EP
2-8, 8 of 8 replays; docs/bench/cpu-qwen3moe-acceptance/price_allocation.txt); paired servers were
level within one pass (docs/benchmarks.md).

A price has units (tokens per second of this machine's cost model), the held bound does not. So
price = bound / target x PRICE_AT_TARGET x reference, where the reference is a running mean of the
whole candidate trees' rate (expected tokens / predicted seconds) of the rounds of this width
bucket (`loss_bound.width_bucket`): scale-free to start from, and it follows the cost model and
the batch as they change. The held bound (`loss_bound.WidthBounds`) moves the price as it moved
the share: a round that gave up less than the target raises it.
"""

from __future__ import annotations

import math

from .loss_bound import width_bucket

PRICE_AT_TARGET = 0.25  # the price at bound = target, in units of the reference rate (replays: 0.2-0.5 hold 3%)
REF_WEIGHT = 0.05  # weight of the latest round in the running reference rate


def price_of(bound: float, target: float, reference: float) -> float:
    """The price a round prunes at: bound / target x PRICE_AT_TARGET x the reference rate."""
    if not (bound > 0 and target > 0 and reference > 0 and math.isfinite(reference)):
        raise ValueError(f"bound {bound}, target {target} and reference rate {reference} must be positive "
                         "(and the reference finite)")
    return bound / target * PRICE_AT_TARGET * reference


class ReferenceRates:
    """A running mean of the whole candidate trees' rate (expected tokens per predicted second)
    per width bucket."""

    def __init__(self, weight: float = REF_WEIGHT):
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"reference weight {weight} must be in (0, 1]")
        self.weight = weight
        self.by_width: dict[int, float] = {}
        self._fresh = False  # stop_at started this round's width's reference from its own trees

    def get(self, nodes: int) -> float | None:
        """The reference of the width bucket of a round whose widest candidate tree has `nodes`."""
        return self.by_width.get(width_bucket(nodes))

    def stop_at(self, nodes: int, bound: float, target: float, whole) -> dict:
        """schedule_batch's stopping argument for a held round: {"price": ...} on this width's
        reference; a width's first round starts the reference from its own whole candidate trees
        (`whole()` -> their (expected tokens, predicted seconds)); while the cost model prices
        nothing, {"max_expected_loss": bound}. Call `after` with the round's schedule."""
        ref, self._fresh = self.get(nodes), False
        if ref is None:
            ref, self._fresh = self.update(nodes, *whole()), True
        return {"max_expected_loss": bound} if ref is None else {"price": price_of(bound, target, ref)}

    def after(self, nodes: int, schedule) -> None:
        """Fold in a priced round's whole candidate trees (TreeSchedule.full_expected / full_seconds),
        unless `stop_at` just started the reference from them."""
        if schedule.full_seconds is not None and not self._fresh:
            self.update(nodes, schedule.full_expected, schedule.full_seconds)
        self._fresh = False

    def update(self, nodes: int, expected: float, seconds: float) -> float | None:
        """Fold in a round's whole candidate trees (expected tokens, predicted seconds); a round the
        cost model prices at no time (not calibrated yet) is left out. Returns the reference."""
        key = width_bucket(nodes)
        if seconds > 0 and expected > 0 and math.isfinite(expected / seconds):
            rate = expected / seconds
            old = self.by_width.get(key)
            self.by_width[key] = rate if old is None else old + self.weight * (rate - old)
        return self.by_width.get(key)
