"""Hold the accepted-length loss of expert-aware pruning at a target, with observed acceptance.

Expert-aware pruning (`expert_aware_tree.schedule_batch`) gives up at most a share of the
candidate trees' EXPECTED committed tokens, expected under an acceptance model. When that model
under-predicts deep nodes (acceptances along a path are correlated), the accepted length falls by
more than the share: 3-12% at a 3% bound in the 64-expert CPU server
(docs/bench/cpu-qwen3moe-acceptance). `LossBound` steers the bound handed to the pruning (on the
model's expected tokens) so that the loss actually observed meets `target` on average: per
observation, log(bound) moves by rate * (target * full - lost) / (target * mean full) (at most
MAX_STEP), within [target * MIN_FACTOR, MAX_BOUND].

Two kinds of observation:
  - every pruned round where the target's pick after the last accepted node is known (greedy and
    the walk rule: the bonus token) observes itself (`pruned_outcome`): whether the full tree's
    accepted path would have run into a pruned child is exact (that child's token is the pick);
    how far it would have run below it is the acceptance model's expectation. These come every
    round, at `label_rate` each, and cost nothing;
  - a probe round, needed only where rounds do not label themselves (recursive rejection
    sampling): the scheduler decides what it would prune, verifies the whole candidate trees
    instead, and compares the tokens they committed with what the pruned trees would have
    (`committed`, exact: a kept node keeps its ancestors). One pruning round in `probe_every`
    probes when no round was observed since the last probe; a probe costs its share of the
    savings.
A bound per tree width (`WidthBounds`): the share of the model's expected tokens that costs
`target` of the accepted length depends on how wide the trees are. Replayed on two 64-expert
traces of budgets 32, 64 and 128 taking turns, one bound for all rounds settled between what
each width needs: the budget-32 rounds lost 5.6% / 5.7% of their accepted length, the budget-64
ones 1.5% / 1.7%. Bounds learnt per width from that width's rounds alone held 3.6-4.2% at 32 and
2.8-3.1% at 64 / 128, but a change of workload (math to code) then has to be relearnt by every
width from a third of the rounds: the first code cells lost 6-7% at every width. So each width's
bound is a part of its own on a part all widths share, both moved by every observation of that
width: 3.6-3.9% at 32, 2.4-3.0% at 64 / 128, the first code cells 3.6-6.0%, and distinct
experts -19.3% / -16.3% overall at -3.0% / -3.1% accepted length (one bound: -19.1% / -15.8% at
-3.2% / -3.1%; on a trace of budgets 64 and 128 only -18.2% at -3.1% against -18.6% at -2.9%;
docs/bench/cpu-qwen3moe-acceptance/width_bounds.txt).

What the bound bounds: the share of each round's expected tokens pruning may give up, or (the
server's default since 2026-12-07 late night) it sets one price per expected token all rounds
prune at (core/held_price.py: price proportional to bound / target); either way a round that gave
up less than the target raises it.

In exact replays of recorded rounds (four traces, two targets) the labelled estimate of the lost
tokens came to 0.99-1.12x the truth (docs/bench/cpu-qwen3moe-acceptance/label_estimate.txt), and
holding the bound with it instead of probes pruned more experts: 64 experts, budgets 64-128,
-18.6% at -2.9% accepted length where probes gave -17.7% at -3.1% (label_hold.txt there).
"""

from __future__ import annotations

import math

MIN_FACTOR = 0.05  # the bound never falls below target * MIN_FACTOR
MAX_BOUND = 0.5  # nor rises above half the expected tokens
MAX_STEP = 0.5  # largest move of log(bound) per observation
LABEL_RATE = 0.02  # rate of a labelled round's observation (one comes every pruned round)


def pruned_outcome(parents: list[int], tokens: list[int], kept: list[int], probs: list[float],
                   path: list[int], pick: int) -> tuple[list[int], list[int], float]:
    """What a PRUNED round says about its candidate tree (greedy or the walk rule: the target's
    pick after the last accepted node is `pick`, the bonus token).

    parents, tokens: the candidate tree's; kept: the candidate indices of the verified nodes
    (ascending, root first); probs: [n - 1] the acceptance model's P(accepted) of the candidate's
    non-root nodes; path: the accepted path in VERIFIED indices. Returns
      - the candidate nodes whose outcome is known: all but the strict descendants of c, where c is
        the pruned child of the last accepted node whose token is the pick (if there is one: the
        full tree's accepted path would have run into it);
      - the accepted path in candidate indices, c appended when it exists;
      - the tokens the pruning lost on this request, estimated: 0 without c, else 1 (c itself,
        exact) + the model's expected accepted nodes below c given c accepted (the sum of
        P(d) / P(c) over c's descendants).
    Exact where it matters most: whether the pruning cost this request anything at all."""
    cpath = [kept[i] for i in path]
    end, kept_set = cpath[-1], set(kept)
    c = next((v for v in range(1, len(parents)) if parents[v] == end and tokens[v] == pick and v not in kept_set), None)
    if c is None:
        return list(range(len(parents))), cpath, 0.0
    below = [False] * len(parents)
    tail, pc = 0.0, max(probs[c - 1], 1e-12)
    for v in range(c + 1, len(parents)):  # topological: a parent comes before its children
        if parents[v] == c or (parents[v] > c and below[parents[v]]):
            below[v] = True
            tail += min(probs[v - 1] / pc, 1.0)
    return [v for v in range(len(parents)) if not below[v]], cpath + [c], 1.0 + tail


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
    def __init__(self, target: float, probe_every: int = 8, rate: float = 0.05, alpha: float = 0.1,
                 label_rate: float = LABEL_RATE):
        if not 0.0 < target < MAX_BOUND:
            raise ValueError(f"accepted-length loss target {target} must be in (0, {MAX_BOUND})")
        if probe_every < 2:
            raise ValueError(f"probe_every {probe_every} must be >= 2 (1 would never prune)")
        if not 0.0 < rate <= 1.0 or not 0.0 < alpha <= 1.0 or not 0.0 < label_rate <= 1.0:
            raise ValueError(f"rate {rate}, label_rate {label_rate} and alpha {alpha} must be in (0, 1]")
        self.target, self.probe_every, self.rate, self.alpha = target, probe_every, rate, alpha
        self.label_rate = label_rate
        self.log_bound = math.log(target)
        self.full = self.pruned = None  # running means of committed tokens per observed round
        self.probes = self.labelled = 0
        self._unobserved = 0  # pruning rounds since the last observation

    @property
    def bound(self) -> float:
        return math.exp(self.log_bound)

    @property
    def observed_loss(self) -> float | None:
        """The running share of committed tokens the pruning gave up on the observed rounds."""
        if not self.full:
            return None
        return 1.0 - self.pruned / self.full

    def next_is_probe(self) -> bool:
        """Call once per pruning round: whether this one verifies the candidate trees whole: when
        `probe_every` pruning rounds in a row went unobserved (rounds that label themselves never
        need a probe; without labels one round in `probe_every` probes)."""
        self._unobserved += 1
        return self._unobserved >= self.probe_every

    def observe(self, full_tokens: float, pruned_tokens: float, estimated: bool = False) -> float:
        """A round's committed tokens (summed over its requests): as the whole candidate trees
        commit them and as the pruned trees do. A probe measures both (estimated=False); a labelled
        pruned round knows its own and estimates the full trees' (`pruned_outcome`,
        estimated=True, moved at `label_rate`). Each observation moves the bound by its own loss
        (a stochastic approximation: the bound settles where the EXPECTED loss is the target, and
        a run of early, costly rounds, while the acceptance model is still learning, does not
        linger in a running mean); the running means are for reporting. Returns how far log(bound)
        moved (0 for a round that committed nothing)."""
        if pruned_tokens > full_tokens or pruned_tokens < 0:
            raise ValueError(f"pruned trees commit {pruned_tokens} tokens, must be in [0, {full_tokens}]")
        self._unobserved = 0
        if estimated:
            self.labelled += 1
        else:
            self.probes += 1
        if self.full is None:
            self.full, self.pruned = float(full_tokens), float(pruned_tokens)
        else:
            self.full += self.alpha * (full_tokens - self.full)
            self.pruned += self.alpha * (pruned_tokens - self.pruned)
        if not self.full:
            return 0.0
        lost = full_tokens - pruned_tokens
        rate = self.label_rate if estimated else self.rate
        step = rate * (self.target * full_tokens - lost) / (self.target * self.full)
        lo, hi = _log_range(self.target)
        before = self.log_bound
        self.log_bound = min(hi, max(lo, self.log_bound + max(-MAX_STEP, min(MAX_STEP, step))))
        return self.log_bound - before

    def snapshot(self) -> dict:
        return {"target": self.target, "bound": self.bound, "probes": self.probes, "labelled": self.labelled,
                "observed_loss": self.observed_loss, "probe_every": self.probe_every}


def _log_range(target: float) -> tuple[float, float]:
    """The range of log(bound): [log(target * MIN_FACTOR), log(MAX_BOUND)]."""
    return math.log(target * MIN_FACTOR), math.log(MAX_BOUND)


def width_bucket(nodes: int) -> int:
    """The width key of a round: its widest candidate tree's node count rounded up to a power of two."""
    if nodes < 1:
        raise ValueError(f"a tree has at least its root: nodes {nodes} must be >= 1")
    return 1 << (nodes - 1).bit_length()


class WidthBounds:
    """The held bound per width bucket (`width_bucket`): log(bound of width w) = shared + own_w.
    Every observation of a width-w round moves both its own part and the shared part by the same
    step (`LossBound.observe`), so what all widths have in common (a change of workload, say) is
    learnt from every round, and what sets one width apart from the others from its own.
    `for_width(nodes)` gives the round's bound object (bound, next_is_probe, observe)."""

    def __init__(self, target: float, probe_every: int = 8, **kwargs):
        LossBound(target, probe_every, **kwargs)  # bad settings fail here, before any round
        self.target, self.probe_every, self._kwargs = target, probe_every, kwargs
        self.shared = 0.0  # the shared part of log(bound), added to each width's own
        self.by_width: dict[int, _WidthBound] = {}
        self.last: int | None = None  # the bucket of the latest round

    def for_width(self, nodes: int) -> "_WidthBound":
        key = width_bucket(nodes)
        self.last = key
        if key not in self.by_width:
            self.by_width[key] = _WidthBound(self, LossBound(self.target, self.probe_every, **self._kwargs))
        return self.by_width[key]

    def snapshot(self) -> dict:
        """Totals over the widths; `bound` / `observed_loss` are the latest round's width's (the
        target before any round); `by_width` every width's own snapshot, its `bound` the one it
        prunes with (shared part included); `shared_factor` = exp(shared)."""
        cur = self.by_width.get(self.last) if self.last is not None else None
        return {"target": self.target, "probe_every": self.probe_every,
                "bound": cur.bound if cur is not None else self.target,
                "observed_loss": cur.own.observed_loss if cur is not None else None,
                "width": self.last, "shared_factor": math.exp(self.shared),
                "probes": sum(b.own.probes for b in self.by_width.values()),
                "labelled": sum(b.own.labelled for b in self.by_width.values()),
                "by_width": {str(k): b.snapshot() for k, b in sorted(self.by_width.items())}}


class _WidthBound:
    """One width's view of a WidthBounds: its own LossBound plus the shared part."""

    def __init__(self, parent: WidthBounds, own: LossBound):
        self.parent, self.own = parent, own

    @property
    def bound(self) -> float:
        lo, hi = _log_range(self.own.target)
        return math.exp(min(hi, max(lo, self.own.log_bound + self.parent.shared)))

    def next_is_probe(self) -> bool:
        return self.own.next_is_probe()

    def observe(self, full_tokens: float, pruned_tokens: float, estimated: bool = False) -> float:
        step = self.own.observe(full_tokens, pruned_tokens, estimated)
        lo, hi = _log_range(self.own.target)
        span = hi - lo  # the shared part never moves the bound further than the whole range
        self.parent.shared = min(span, max(-span, self.parent.shared + step))
        return step

    def snapshot(self) -> dict:
        return dict(self.own.snapshot(), bound=self.bound)
