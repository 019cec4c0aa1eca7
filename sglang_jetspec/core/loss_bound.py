"""Hold the accepted-length loss of expert-aware pruning at a target, with observed acceptance.

Expert-aware pruning (`expert_aware_tree.schedule_batch`) gives up at most a share of the
candidate trees' EXPECTED committed tokens, expected under an acceptance model. When that model
under-predicts deep nodes (acceptances along a path are correlated), the accepted length falls by
more than the share: 3-12% at a 3% bound in the 64-expert CPU server
(docs/bench/cpu-qwen3moe-acceptance). The loss actually paid cannot be seen on a pruned round (a
pruned node's outcome is never verified), but it can be measured EXACTLY on a probe round: the
scheduler decides what it would prune, verifies the whole candidate trees instead, and compares
the tokens they committed with what the pruned trees would have committed (a kept node keeps its
ancestors, so its outcome is the full tree's: `committed`).

`LossBound` runs one probe in `probe_every` pruning rounds and steers the bound handed to the
pruning (on the model's expected tokens) so that the loss observed on the probes meets `target`
on average: per probe, log(bound) moves by rate * (target * full - lost) / (target * mean full)
(at most MAX_STEP), within [target * MIN_FACTOR, MAX_BOUND]. Probe rounds are verified whole: they cost their
share of the savings, and they give the acceptance model outcomes of nodes the pruning would have
hidden from it.
"""

from __future__ import annotations

import math

MIN_FACTOR = 0.05  # the bound never falls below target * MIN_FACTOR
MAX_BOUND = 0.5  # nor rises above half the expected tokens
MAX_STEP = 0.5  # largest move of log(bound) per probe


def committed(path: list[int], kept) -> int:
    """Tokens a round commits for one request when only the `kept` nodes (a set of node indices of
    the full tree) are verified: the kept prefix of the accepted path `path` (root first, node
    indices of the full tree), whose last node's target pick is the bonus token."""
    n = 0
    for v in path:
        if v not in kept:
            break
        n += 1
    return n


class LossBound:
    def __init__(self, target: float, probe_every: int = 8, rate: float = 0.05, alpha: float = 0.1):
        if not 0.0 < target < MAX_BOUND:
            raise ValueError(f"accepted-length loss target {target} must be in (0, {MAX_BOUND})")
        if probe_every < 2:
            raise ValueError(f"probe_every {probe_every} must be >= 2 (1 would never prune)")
        if not 0.0 < rate <= 1.0 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"rate {rate} and alpha {alpha} must be in (0, 1]")
        self.target, self.probe_every, self.rate, self.alpha = target, probe_every, rate, alpha
        self.log_bound = math.log(target)
        self.full = self.pruned = None  # running means of committed tokens per probe round
        self.probes = 0
        self._count = 0

    @property
    def bound(self) -> float:
        return math.exp(self.log_bound)

    @property
    def observed_loss(self) -> float | None:
        """The running share of committed tokens the pruning gave up on the probe rounds."""
        if not self.full:
            return None
        return 1.0 - self.pruned / self.full

    def next_is_probe(self) -> bool:
        """Call once per pruning round: whether this one verifies the candidate trees whole. The
        first round probes, then one in `probe_every`."""
        probe = self._count % self.probe_every == 0
        self._count += 1
        return probe

    def observe(self, full_tokens: int, pruned_tokens: int) -> None:
        """A probe round's committed tokens (summed over its requests): as verified (whole) and as
        the pruned trees would have committed them. Each probe moves the bound by its own loss (a
        stochastic approximation: the bound settles where the EXPECTED loss is the target, and a
        run of early, costly probes, while the acceptance model is still learning, does not
        linger in a running mean); the running means are for reporting."""
        if pruned_tokens > full_tokens or pruned_tokens < 0:
            raise ValueError(f"pruned trees commit {pruned_tokens} tokens, must be in [0, {full_tokens}]")
        self.probes += 1
        if self.full is None:
            self.full, self.pruned = float(full_tokens), float(pruned_tokens)
        else:
            self.full += self.alpha * (full_tokens - self.full)
            self.pruned += self.alpha * (pruned_tokens - self.pruned)
        if not self.full:
            return
        lost = full_tokens - pruned_tokens
        step = self.rate * (self.target * full_tokens - lost) / (self.target * self.full)
        lo, hi = math.log(self.target * MIN_FACTOR), math.log(MAX_BOUND)
        self.log_bound = min(hi, max(lo, self.log_bound + max(-MAX_STEP, min(MAX_STEP, step))))

    def snapshot(self) -> dict:
        return {"target": self.target, "bound": self.bound, "probes": self.probes,
                "observed_loss": self.observed_loss, "probe_every": self.probe_every}
