"""Per-batch draft budget: the verify width that maximises expected committed tokens per second.

Why: the best static budget moves with the batch (the paper's serving table: 128 nodes at batch 1,
32 at batch 8-16) and with how predictable the text is. Each round the controller prices every
common verify width W in [1, max_width] (W counts the root; W = 1 is plain decoding):

    E(W)    = sum_r [1 + sum of the first min(W, n_r + 1) - 1 calibrated node probs of request r]
    T(W)    = cost(bs, W_eff) * (1 + kv_penalty * 2 * bs * W_eff / kv_free_tokens)
    choose    argmax_W E(W) / T(W)   (ties -> the smaller W)

E is exact under greedy acceptance: a node's acceptance does not depend on the rest of the tree
(calibration.py), and with best-first order the tree of budget W is the first W nodes of any
larger tree (tree.py), so one candidate tree per request built at its own maximum budget prices
every W by a prefix sum. W_eff = min(W, max_r (n_r + 1)): no request can fill more rows.

Per-request budgets: SGLang's verify pads every request to the widest tree with dead rows that
cost exactly what real rows cost, so giving a request fewer real nodes than W never saves time;
each request gets min(W, n_r + 1), except that nodes whose probability is below
`min_node_prob` are trimmed off the tail (harmless, lowers host work and makes the trimmed
requests' KV writes smaller). A RAGGED verify (rows = sum of per-request budgets instead of
bs * W) would make the split matter: the optimum then takes nodes across all requests in
decreasing probability until the marginal probability falls below the marginal row price.

KV pressure: a round reserves bs * W KV slots twice (SGLang double-buffers the verify window),
so W <= kv_free_tokens // (2 * bs) is a hard bound (kv_free_tokens = free + evictable slots of
the pool). `kv_penalty` > 0 adds a soft price to claiming a large share of what is left: with a
radix cache, "evictable" slots are cached prefixes that other requests may reuse, and using them
for speculation can force recomputation or retraction later. The penalty scales the predicted
time by 1 + kv_penalty * (share of free KV this round reserves); 0 (default) turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .calibration import AcceptanceCalibrator
from .tree import DraftTree

Cost = Callable[[int, int], float]  # cost(bs, width) -> predicted seconds of the step


@dataclass
class Decision:
    width: int  # common verify width (rows per request, root included); 1 = plain decoding
    per_request_budgets: list[int]  # real tree nodes per request (root included), each <= width
    expected_tokens: float  # expected committed tokens of the whole batch (bonus included)
    predicted_seconds: float  # cost(bs, width), without the KV penalty
    objective: float  # expected_tokens / (predicted_seconds * KV penalty factor)
    reason: str = "optimal"  # optimal | pinned | kv_bound (the KV bound cut the search range)
    kv_bound: int | None = None  # kv_free_tokens // (2 * bs), None when not given
    objectives: list[float] = field(default_factory=list, repr=False)  # objective per W = 1..len


def choose_width(node_probs: Sequence[torch.Tensor], cost: Cost, max_width: int,
                 kv_free_tokens: int | None = None, pinned: int | None = None,
                 kv_penalty: float = 0.0, min_node_prob: float = 0.0) -> Decision:
    """The verify width for this round (module docstring for the objective).

    node_probs[r]: [n_r] calibrated P(accepted) of request r's candidate nodes in best-first
    order, root excluded (AcceptanceCalibrator.tree_probs of the request's candidate tree).
    cost(bs, width) -> seconds (StepCostModel.cost, or any external model, e.g. MoE-aware).
    max_width: the server budget SGLang reserved KV for; never exceeded. pinned: a static
    width that overrides the optimisation (still capped by max_width and the KV bound).
    """
    bs = len(node_probs)
    if bs < 1:
        raise ValueError("choose_width needs at least one request, got an empty batch")
    if max_width < 1:
        raise ValueError(f"max_width {max_width} must be >= 1")
    if kv_free_tokens is not None and kv_free_tokens < 0:
        raise ValueError(f"kv_free_tokens {kv_free_tokens} must be >= 0")
    if pinned is not None and pinned < 1:
        raise ValueError(f"pinned width {pinned} must be >= 1")
    if kv_penalty < 0 or min_node_prob < 0:
        raise ValueError(f"kv_penalty {kv_penalty} and min_node_prob {min_node_prob} must be >= 0")
    for r, p in enumerate(node_probs):
        if p.dim() != 1:
            raise ValueError(f"node_probs[{r}] has shape {tuple(p.shape)}, expected [n_r]")
        if p.numel() and (bool(torch.isnan(p).any()) or float(p.min()) < 0 or float(p.max()) > 1):
            raise ValueError(f"node_probs[{r}] must be probabilities in [0, 1], got {p.tolist()[:8]}...")

    # search range: [1, hi]
    hi, reason = max_width, "optimal"
    kv_bound = None if kv_free_tokens is None else kv_free_tokens // (2 * bs)
    if kv_bound is not None and kv_bound < hi:
        hi, reason = max(1, kv_bound), "kv_bound"
    if pinned is not None:
        hi, reason = min(pinned, hi), "pinned"
    sizes = [min(int(p.numel()) + 1, max_width) for p in node_probs]  # real nodes per request

    # expected tokens for every W in 1..hi by prefix sums over each request's candidates
    probs = torch.zeros(bs, hi, dtype=torch.float64)  # [bs, hi]; column 0 = root (always 1)
    probs[:, 0] = 1.0
    for r, p in enumerate(node_probs):
        k = min(int(p.numel()), hi - 1)
        probs[r, 1:1 + k] = p[:k].detach().cpu().to(torch.float64)
    expected = probs.sum(0).cumsum(0).tolist()  # [hi]; expected[W-1] = E(W)

    fill = max(sizes)  # no request fills more rows, so wider verify widths cost extra for nothing

    def price(w_eff: int) -> tuple[float, float]:
        """(predicted seconds, seconds with the KV penalty) of a step at width w_eff."""
        seconds = float(cost(bs, w_eff))
        if not seconds > 0:
            raise ValueError(f"cost({bs}, {w_eff}) = {seconds} must be > 0 seconds")
        factor = 1.0
        if kv_penalty and kv_free_tokens:
            factor += kv_penalty * min(1.0, 2 * bs * w_eff / kv_free_tokens)
        return seconds, seconds * factor

    objectives, chosen = [], 1
    for w in range(1, hi + 1):
        objectives.append(expected[w - 1] / price(min(w, fill))[1])
        if objectives[-1] > objectives[chosen - 1] * (1 + 1e-12):
            chosen = w
    if pinned is not None:  # the pinned width is used as is, whatever the objective says
        chosen = hi

    budgets = [_trim(p, min(s, chosen), min_node_prob) for p, s in zip(node_probs, sizes)]
    width = max(budgets)
    seconds, penalised = price(width)
    tokens = sum(float(probs[r, :b].sum()) for r, b in enumerate(budgets))
    return Decision(width=width, per_request_budgets=budgets, expected_tokens=tokens,
                    predicted_seconds=seconds, objective=tokens / penalised, reason=reason,
                    kv_bound=kv_bound, objectives=objectives)


def choose_shared_width(curve: Sequence[float], costs: Sequence[float], bs: int, max_width: int,
                        kv_free_tokens: int | None = None) -> Decision:
    """choose_width for a batch whose requests all share one expected-acceptance curve, in
    plain Python (the width policy calls it every step; choose_width's tensors cost ~0.1 ms
    there for a 64-entry curve). Same result as
    choose_width([tensor(curve)] * bs, lambda _bs, w: costs[w - 1], max_width, kv_free_tokens).

    curve[i]: P(accept) of each request's (i+1)-th best-first node (len >= max_width - 1);
    costs[w - 1]: predicted seconds of a step at width w (len >= max_width, all > 0)."""
    if bs < 1:
        raise ValueError("choose_shared_width needs at least one request, got bs = 0")
    if max_width < 1:
        raise ValueError(f"max_width {max_width} must be >= 1")
    if len(curve) < max_width - 1 or len(costs) < max_width:
        raise ValueError(f"curve ({len(curve)} ranks) and costs ({len(costs)} widths) must cover "
                         f"max_width {max_width}")
    if kv_free_tokens is not None and kv_free_tokens < 0:
        raise ValueError(f"kv_free_tokens {kv_free_tokens} must be >= 0")
    hi, reason = max_width, "optimal"
    kv_bound = None if kv_free_tokens is None else kv_free_tokens // (2 * bs)
    if kv_bound is not None and kv_bound < hi:
        hi, reason = max(1, kv_bound), "kv_bound"
    per_request, objectives, chosen = 1.0, [], 1
    expected = []  # expected[w - 1] = E(w) of one request
    for w in range(1, hi + 1):
        if w > 1:
            q = curve[w - 2]
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"curve[{w - 2}] = {q} must be a probability in [0, 1]")
            per_request += q
        seconds = float(costs[w - 1])
        if not seconds > 0:
            raise ValueError(f"cost({bs}, {w}) = {seconds} must be > 0 seconds")
        expected.append(per_request)
        objectives.append(bs * per_request / seconds)
        if objectives[-1] > objectives[chosen - 1] * (1 + 1e-12):
            chosen = w
    tokens = bs * expected[chosen - 1]
    seconds = float(costs[chosen - 1])
    return Decision(width=chosen, per_request_budgets=[chosen] * bs, expected_tokens=tokens,
                    predicted_seconds=seconds, objective=tokens / seconds, reason=reason,
                    kv_bound=kv_bound, objectives=objectives)


def _trim(p: torch.Tensor, budget: int, min_node_prob: float) -> int:
    """Drop the tail nodes (beyond the last node with prob >= min_node_prob) of a budget."""
    if min_node_prob <= 0 or budget <= 1:
        return budget
    keep = (p[: budget - 1] >= min_node_prob).nonzero()
    return 1 + (int(keep[-1]) + 1 if keep.numel() else 0)


def tree_prefix(tree: DraftTree, k: int) -> DraftTree:
    """The first k nodes of a best-first tree: exactly build_tree(..., budget=k) with the same
    logprobs/width/depth (the prefix property), so a round builds ONE candidate tree at the
    request's maximum budget and verifies a prefix of it."""
    if not 1 <= k <= tree.n:
        raise ValueError(f"prefix size {k} must be in [1, {tree.n}]")
    return DraftTree(tree.tokens[:k], tree.parents[:k], tree.depths[:k], tree.scores[:k], tree.ranks[:k])


class RecentAcceptance:
    """EMA of the accepted length per request-round (bonus included), and of the controller's
    expected length, so a dashboard (or a guard) sees drift: ratio = actual / expected."""

    def __init__(self, alpha: float = 0.05):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha {alpha} must be in (0, 1]")
        self.alpha = alpha
        self.length: float | None = None
        self.expected: float | None = None
        self.rounds = 0

    def observe(self, accept_lens: Sequence[int], expected_tokens: float | None = None) -> None:
        """One round: accepted lengths of its requests; expected_tokens = Decision.expected_tokens."""
        if not len(accept_lens):
            raise ValueError("observe needs the accepted lengths of at least one request")
        mean = float(sum(accept_lens)) / len(accept_lens)
        self.length = mean if self.length is None else self.length + self.alpha * (mean - self.length)
        if expected_tokens is not None:
            e = expected_tokens / len(accept_lens)
            self.expected = e if self.expected is None else self.expected + self.alpha * (e - self.expected)
        self.rounds += 1

    @property
    def ratio(self) -> float | None:
        """actual / expected accepted length (1 = calibrated), None until both are known."""
        if self.length is None or not self.expected:
            return None
        return self.length / self.expected


class BudgetController:
    """The calibrator, a cost model and the acceptance tracker wired together for a worker.

    Per round:  d = ctrl.decide(candidate_trees, kv_free_tokens)
                trees = [tree_prefix(t, b) for t, b in zip(candidate_trees, d.per_request_budgets)]
                ... verify at width d.width ...
                ctrl.observe(candidate_trees, d, accepted_paths, bonus_tokens, seconds)
    """

    def __init__(self, max_width: int, cost: Cost, calibrator: AcceptanceCalibrator | None = None,
                 pinned: int | None = None, kv_penalty: float = 0.0, min_node_prob: float = 0.0,
                 acceptance: RecentAcceptance | None = None):
        self.max_width, self.cost, self.pinned = max_width, cost, pinned
        self.kv_penalty, self.min_node_prob = kv_penalty, min_node_prob
        self.calibrator = calibrator or AcceptanceCalibrator()
        self.acceptance = acceptance or RecentAcceptance()

    def decide(self, candidate_trees: list[DraftTree], kv_free_tokens: int | None = None) -> Decision:
        probs = self.calibrator.trees_probs(
            [tree_prefix(t, min(t.n, self.max_width)) for t in candidate_trees])
        return choose_width(probs, self.cost, self.max_width, kv_free_tokens, self.pinned,
                            self.kv_penalty, self.min_node_prob)

    def observe(self, candidate_trees: list[DraftTree], decision: Decision,
                accepted_paths: list[list[int]], bonus_tokens: list[int | None] | None = None,
                seconds: float | None = None) -> None:
        """Feed one round back: paths are tree indices from the root (0) of each verified prefix;
        bonus tokens only for greedy/walk-rule requests (None entries elsewhere); seconds = the
        measured step time, passed to the cost model if it has `observe`."""
        self.calibrator.update_from_trees(candidate_trees, accepted_paths,
                                          decision.per_request_budgets, bonus_tokens)
        self.acceptance.observe([len(p) for p in accepted_paths], decision.expected_tokens)
        if seconds is not None and hasattr(self.cost, "observe"):
            bs = len(candidate_trees)
            self.cost.observe(bs, bs * decision.width, seconds)
