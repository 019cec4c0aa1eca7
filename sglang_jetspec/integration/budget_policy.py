"""The verify width of each JETSPEC decode step: static, or chosen per batch (issue 6).

  SGLANG_JETSPEC_BUDGET=adaptive  (default) the width W <= --speculative-num-draft-tokens is
      chosen BEFORE drafting, to maximise expected committed tokens per predicted step time:
        - expected tokens: a curve E(w) per request, the running mean over recent rounds of
          1 + the calibrated acceptance probabilities of the first w - 1 nodes of each request's
          best-first tree (core/calibration.py, learned online from verify outcomes), the
          observed acceptance of each rank where it has been verified (below);
        - step time: core/step_cost.py fitted online on whole rounds (draft + tree + verify +
          bookkeeping) as a function of batch size and rows = bs * W;
        - cache pressure: free KV slots plus what the radix cache could evict bound W
          (kv_free // (2 bs), SGLang's double-buffered reserve).
      The head then drafts only the W - 1 depth rows a tree of W nodes can reach, and each
      request verifies its best-first tree of budget min(W, its own budget): W = 1 is plain
      decoding with no head forward at all. Deciding first is what lets a small W save the
      draft too (on a CPU the head's lm_head over 15 rows costs a third of a round).
  SGLANG_JETSPEC_BUDGET=static    every step verifies the server budget (the pinned budget).

Exploration: the curve beyond the widths in use and the cost of other widths are only seen by
trying them, so the first rounds walk the widths 1, 2, 4, ..., max and one round in
`explore_every` afterwards takes a random one. Once the cost model has seen the ladder, an
exploration round (and any later warm-up pass) only picks among widths predicted to cost at most
`explore_cost_factor` x the step at the currently chosen width: at batch 16 on a CPU a width-64
round cost 4 s against 0.5 s for the width in use, so blind exploration there cost more than it
could ever find. Any width is lossless (it only chooses which
candidate nodes are verified, never what is committed).

Bias correction: the calibration maps a node's draft score to P(accept) over everything it has
seen, so on the current workload it can be off as a whole (measured: the curve said 2.15 tokens
per round at width 8 where budget 8 committed 2.58 on math). The policy keeps running means of
the accepted draft nodes per request-round and of what the calibrator predicted for the same
verified trees (before learning from them), and scales the curve by their ratio (within
[BIAS_MIN, BIAS_MAX]; rounds without drafted nodes do not count).

Observed acceptance per rank: one scalar cannot correct a calibration that is off by different
amounts at different ranks, so where a best-first rank has been verified the curve uses the
share of its nodes the target accepted (exact for that rank whatever width verified it: nodes
are stored best-first and a node's acceptance does not depend on the rest of the tree),
blended with the corrected calibration by their weights (EMP_PRIOR request-observations for the
calibration, at most EMP_CAP for the observations, which lose EMP_DECAY of their weight per
round since the rank was last verified). Ranks beyond the widths verified keep calibration x bias.

Measured step times: the cost model is linear, and on a CPU the real step time is not (a
verify row costs more once the batch's rows make the matmuls compute-bound): fitted mostly on
batch-1 rounds it priced width 4 at batch 16 at about half of what it took, and the policy kept
speculating where plain decoding was faster. So the policy also keeps a running mean of the
measured round time per (batch size, width) it has run, and prices widths by those means,
shrunk toward the model by their round counts and made non-decreasing in width
(core/width_costs.py: single means moved by 10-20% between neighbouring widths and decided
between widths whose true times differ by 3%); widths not yet run take the model's price,
clamped between their measured neighbours. Width 1 stays among the widths
exploration tries, and until it has PLAIN_ROUNDS measured rounds at a batch size one round in
PLAIN_MIN_GAP there runs it, so "no speculation" is measured at every batch size in use, not
left to the model's price (exploration alone, one round in 40, missed it at batch 16).

Curve probes: a width w only shows the curve at ranks below w, and exploration (one round in
`explore_every`) was the only view beyond it, so after a phase at width 1 (batch 16) a batch-1
math phase took ~40 rounds per ladder step to re-widen (measured: 2.00 tokens per round where
budget 8 committed 2.43). A probe round drafts every depth row the server budget can reach and
builds each request's tree at its full budget for the curve only; the round verifies the
best-first prefix of the width chosen (`tree_prefix`: exactly the tree that budget builds), so
a probe changes nothing that is verified or committed. Probes are paid from a credit of
`probe_share` of each step's predicted time, priced at the measured head forward of the full rows
minus that of the width's rows (before both are timed: seconds per row times the extra rows; at
least one row per request: the bigger trees are built too), and their step time
is not taught to the cost model (it would price the width with a probe's extra rows); at most
one round in PROBE_MIN_GAP probes.

Close calls: the curve is calibrated from verified nodes, and at width 1 nothing is verified, so
a calibration that underrates the head (its bias correction at the floor) keeps the policy at
width 1 with nothing to correct it but one random exploration in 40 (measured on SmolLM2 code at
batch 1: 156 of 220 rounds at width 1 where budget 8 ran 1.05x `ar`; with close calls the next
run's adaptive width was 1.07x the best static budget there). When the best width at least
twice or at most half the chosen one is predicted to be nearly as fast, the policy tries it:
paid from a credit of `close_share` of each step's predicted time, at the predicted loss
T(alt) * (1 - rate(alt) / rate(chosen)), so a close call is cheap exactly when the prediction
cannot tell the two apart, and at most one round in CLOSE_MIN_GAP is one. The round verifies
real nodes, so the bias correction and the measured step times learn from it. OFF by default
(close_share=0): with 3% the dense run fixed code batch 1 (0.87 -> 1.07x the best static budget)
but the MoE run regressed at batch 16 (0.35-0.42x `ar`, widths 6-16, where the policy without
them ran width 1 at 0.94-1.17x), not yet understood.

The curve forgets per ROUND, not per observation: a best-first rank seen every round moves by
`curve_alpha` each round, a rank beyond the widths in use (seen only when exploring) takes the
weight 1 - (1 - curve_alpha)^(rounds since it was last seen). Forgetting per observation left
the tail of the curve at what an earlier workload taught (seen in the benchmark: after code at
batch 16, where widths 2-4 win, math at batch 1 kept small widths although budget 16 paid 1.2x:
its ranks 8-15 were updated once in 40 rounds with weight 0.1).
"""

from __future__ import annotations

import os
import random
import time

import torch

from sglang_jetspec.core.budget_controller import BudgetController, Decision, choose_shared_width
from sglang_jetspec.core.step_cost import StepCostModel
from sglang_jetspec.core.tree import DraftTree
from sglang_jetspec.core.width_costs import width_costs
from sglang_jetspec.integration.env_setting import env_choice

ENV = "SGLANG_JETSPEC_BUDGET"
# the bias correction stays within [BIAS_MIN, BIAS_MAX]: it corrects a calibration that is off by
# tens of percent. A lower floor let an early, overconfident calibration push the ratio down, the
# width to 1, and (no drafted nodes, nothing learned) keep it there. The ceiling has no such trap
# (a higher ratio widens the trees, and wider trees teach more) and 1.25 was too low: on MoE math
# the ratio sat at 1.25 while the policy's widths 5-11 committed 3.3 tokens a round where budget
# 16 committed 3.66 at 2.5% more time per round
BIAS_MIN, BIAS_MAX = 0.8, 2.0
MODES = ("adaptive", "static")
# at most one curve probe in this many rounds: a probe's time is not learned as its width's price
# (its extra rows would inflate it), and where a probe costs no extra head rows (width beyond the
# head's depth) the credit alone would make every round one. 16, not 8: a cheap probe still
# builds and learns from full-budget trees, which its price leaves out (MoE target, batch 1,
# width ~10: ~2 ms more tree building; code batch 1 probed 50 of 398 rounds, 13%, one in 8)
PROBE_MIN_GAP = 16
# per-rank empirical acceptance (see the module docstring): weight of the calibrated estimate in
# request-observations, the most observations a rank's mean remembers, and how much of that
# weight a rank loses per round since it was last verified. 0.1, not 0.01: ranks beyond the
# width in use are seen only in exploration rounds, and with 0.01 what one workload taught them
# outlived it. Replayed rounds of the MoE target with its prior (chat, then code, then math, at
# batch 4) held ranks 2-7 at the chat phase's 0.0-0.2 through the code phase, where they accept
# 0.3-0.7, and the width at 2 where 5-7 pays: 0.89x the best static width's tokens/s, 0.965x
# with 0.1; over three workload orders at batch 1 and 4, 0.89-0.99x became 0.965-1.01x, and on
# SmolLM2 0.958-0.996x became 0.958-1.003x (docs/bench/cpu-qwen3moe-prior-auto/decay_replay.txt).
# (Until then a rank verified every round also lost this share each round; now only skipped
# rounds count, see _skipped.)
EMP_PRIOR, EMP_CAP, EMP_DECAY = 4.0, 20.0, 0.1
# close calls (see the module docstring): at most one in this many rounds, and the credit they
# are paid from holds at most this many steps' time
CLOSE_MIN_GAP, CLOSE_CREDIT_STEPS = 8, 4.0
# until plain decoding has PLAIN_ROUNDS measured rounds at a batch size, one round in
# PLAIN_MIN_GAP at that batch size runs width 1 (see _plain_unmeasured). Four rounds, not two:
# the measured mean is shrunk toward the model by n / (n + cost_prior_rounds)
PLAIN_MIN_GAP, PLAIN_ROUNDS = 4, 4
# the fitted cost model is re-solved for a batch size once this many steps were observed since
# its last solve there (_model_costs)
MODEL_REFIT_ROUNDS = 4


def _forced(width: int, reason: str) -> Decision:
    """A width imposed rather than optimised (exploration, measurement, close call)."""
    nan = float("nan")
    return Decision(width=width, per_request_budgets=[], expected_tokens=nan, predicted_seconds=nan,
                    objective=nan, reason=reason)


def _skipped(rounds: int, last: float) -> float:
    """Rounds that passed without verifying a rank last verified in round `last` (rounds counts
    the round being planned or observed, which does not count against it)."""
    return max(0.0, rounds - last - 1.0)


def mode_from_env(environ=os.environ) -> str:
    return env_choice(environ, ENV, MODES)


def ladder(max_width: int) -> list[int]:
    """1, 2, 4, ... and max_width: the widths exploration visits."""
    out, w = [], 1
    while w < max_width:
        out.append(w)
        w *= 2
    return out + [max_width]


class BudgetPolicy:
    def __init__(self, max_width: int, mode: str = "adaptive", warmup_reps: int = 2,
                 explore_every: int = 40, curve_alpha: float = 0.1, seed: int = 0,
                 draft_depth: int | None = None, explore_cost_factor: float = 2.0,
                 probe_share: float = 0.03, close_share: float = 0.0):
        if mode not in MODES:
            raise ValueError(f"budget mode {mode!r} must be one of {list(MODES)}")
        if max_width < 1:
            raise ValueError(f"max_width {max_width} must be >= 1")
        self.mode, self.max_width = mode, max_width
        self.widths = ladder(max_width)
        self.warmup_rounds = warmup_reps * len(self.widths)
        self.explore_every, self.curve_alpha = explore_every, curve_alpha
        if not explore_cost_factor >= 1:
            raise ValueError(f"explore_cost_factor {explore_cost_factor} must be >= 1")
        self.explore_cost_factor = explore_cost_factor
        if not 0 <= probe_share < 1:
            raise ValueError(f"probe_share {probe_share} must be in [0, 1)")
        # curve probes: the depth rows a full-budget tree reaches; credit in seconds; the head's
        # measured seconds per drafted row (None until it has run)
        self.probe_share, self.probe, self.probes = probe_share, False, 0
        if not 0 <= close_share < 1:
            raise ValueError(f"close_share {close_share} must be in [0, 1)")
        self.close_share, self.close_calls = close_share, 0
        self._close_credit, self._last_close = 0.0, -CLOSE_MIN_GAP
        self._last_plain = -PLAIN_MIN_GAP
        self.full_rows = max(0, max_width - 1 if draft_depth is None else min(draft_depth, max_width - 1))
        self._probe_credit, self._row_s, self._last_probe = 0.0, None, -PROBE_MIN_GAP
        self._draft_s: dict[tuple[int, int], float] = {}  # (bs, rows) -> mean head forward seconds
        self._chosen = 1  # the width of the last optimised (non-exploration) round
        self.measured: dict[tuple[int, int], list[float]] = {}  # (bs, width) -> [mean s, rounds]
        self.measured_min, self.measured_alpha = 2, 0.2  # (measured_min: shown in the snapshot)
        self.cost_prior_rounds = 2.0  # the model's price counts as this many measured rounds
        self._costs: dict[int, list[float]] | None = None  # bs -> width_costs table, within plan()
        self._model_cache: dict[int, tuple[int, list[float]]] = {}  # bs -> (observations, model prices)
        self.rng = random.Random(seed)
        # draft_depth: the head's depth rows, so the cost model prices the draft separately
        self.controller = BudgetController(max_width, StepCostModel(draft_depth=draft_depth)) \
            if mode == "adaptive" else None
        # marginal[i]: mean calibrated P(accept) of a request's (i+1)-th best-first node; NaN = unseen
        self.marginal = torch.full((max(max_width - 1, 0),), float("nan"), dtype=torch.float64)
        self.marginal_round = torch.zeros(len(self.marginal), dtype=torch.float64)  # last seen
        # emp[i]: observed acceptance rate of the (i+1)-th best-first node where it was verified;
        # emp_weight[i]: its weight in request-observations as of round emp_round[i]
        self.emp = torch.full((len(self.marginal),), float("nan"), dtype=torch.float64)
        self.emp_weight = torch.zeros(len(self.marginal), dtype=torch.float64)
        self.emp_round = torch.zeros(len(self.marginal), dtype=torch.float64)
        self.rounds = 0
        self.own_seconds = 0.0  # the policy's own work (plan + observe), for the snapshot
        self._actual = self._predicted = None  # running means: accepted / predicted draft nodes
        self.last: Decision | None = None
        self.width_hist: dict[int, int] = {}
        # KV reserve (kv_reserve.py): `reserve` is what SGLang reserved for the step being
        # planned (the server budget until the worker publishes one), `next_reserve` what the
        # step after it needs: twice the last width, the width the policy wants with no reserve
        # cap, the width exploration tries next, within what fits. Without the wanted width the
        # cap was a trap: after width-1 rounds only widths 1-2 were in reach, and where a head
        # forward's fixed cost makes width 2 worse than 1 (on the MoE target: 49 vs 29 ms a
        # round) the policy never saw that width 8 pays (59 ms for 3 tokens)
        self.reserve = self.next_reserve = max_width
        self._explore_next = self._exploration_for(0)

    # ---- before drafting -------------------------------------------------------------------

    def plan(self, bs: int, kv_free_tokens: int | None) -> int:
        """The verify width of this step (static: the server budget)."""
        self.rounds += 1
        if self.controller is None:
            return self.max_width
        self._costs = {}  # cost tables built for this plan only
        t0 = time.perf_counter()
        try:
            return self._plan(bs, kv_free_tokens)
        finally:
            self._costs = None
            self.own_seconds += time.perf_counter() - t0

    def _plan(self, bs: int, kv_free_tokens: int | None) -> int:
        cap = min(self.max_width, self.reserve)  # never more rows than SGLang reserved KV for
        kv_bound = None if kv_free_tokens is None else max(1, kv_free_tokens // (2 * bs))
        hi = cap if kv_bound is None else min(cap, kv_bound)
        explore, self._explore_next = self._explore_next, self._exploration_for(self.rounds)
        known = self._curve_list()
        # the width wanted with KV reserved for any: the next step's reserve holds it (below)
        table = self.cost_table(bs)
        want = choose_shared_width(known, table, bs, self.max_width, kv_free_tokens)
        if explore is not None:
            d = _forced(min(self._explore_width(explore, bs), hi), "explore")
        else:
            d = want if want.width <= cap else choose_shared_width(known, table, bs, cap, kv_free_tokens)
            self._chosen = d.width
            if d.width > 1 and self._plain_unmeasured(bs):
                self._last_plain = self.rounds
                d = _forced(1, "measure-plain")
            alt = None if d.reason == "measure-plain" else self._close_call(d, bs, hi)
            if alt is not None:
                d = _forced(alt, "close-call")
        self.last = d
        self.width_hist[d.width] = self.width_hist.get(d.width, 0) + 1
        self.probe = self._probe_due(bs, d.width)
        self.probes += self.probe
        nxt = max(2 * d.width, want.width,
                  1 if self._explore_next is None else self._explore_width(self._explore_next, bs))
        self.next_reserve = max(1, min(self.max_width, nxt if kv_bound is None else min(nxt, kv_bound)))
        return d.width

    def _plain_unmeasured(self, bs: int) -> bool:
        """Whether plain decoding (width 1) has fewer than PLAIN_ROUNDS measured rounds at this
        batch size and one is due (at most one round in PLAIN_MIN_GAP): the alternative every speculating
        width is weighed against is priced by the model until then, and the model fitted on
        other batch sizes misprices it (on the MoE target at batch 16 it priced width 1 above
        82 / 1.68 = 49 ms where the rounds took ~44 ms, and width 2, no faster per token,
        ran 25 of 30 rounds with width 1 never measured)."""
        m = self.measured.get((bs, 1))
        return (0 if m is None else m[1]) < PLAIN_ROUNDS and self.rounds - self._last_plain >= PLAIN_MIN_GAP

    def _close_call(self, d: Decision, bs: int, hi: int) -> int | None:
        """A width at least twice or at most half the chosen one whose predicted rate is close to
        the chosen one's, when the credit (close_share of each step's predicted time) covers the
        time it is predicted to lose, T(alt) * (1 - rate(alt) / rate(chosen)); else None."""
        if not self.close_share:
            return None
        step = self.step_cost(bs, d.width)
        self._close_credit = min(self._close_credit + self.close_share * step, CLOSE_CREDIT_STEPS * step)
        obj = d.objectives[:hi]
        if self.rounds - self._last_close < CLOSE_MIN_GAP or d.width > len(obj) or not obj[d.width - 1] > 0:
            return None
        far = [w for w in range(1, len(obj) + 1) if w >= 2 * d.width or 2 * w <= d.width]
        if not far:
            return None
        alt = max(far, key=lambda w: obj[w - 1])
        regret = self.step_cost(bs, alt) * max(0.0, 1.0 - obj[alt - 1] / obj[d.width - 1])
        if self._close_credit < regret:
            return None
        self._close_credit -= regret
        self._last_close = self.rounds
        self.close_calls += 1
        return alt

    def _probe_due(self, bs: int, width: int) -> bool:
        """Whether this round is a curve probe: the credit (probe_share of each step's predicted
        time, capped at one probe's price) covers the probe's extra head rows."""
        if not self.probe_share or width >= self.max_width or self._row_s is None:
            return False
        price = self._probe_price(bs, width)
        self._probe_credit = min(self._probe_credit + self.probe_share * self.step_cost(bs, width), price)
        if self._probe_credit < price or self.rounds - self._last_probe < PROBE_MIN_GAP:
            return False  # (the gap: most rounds must price their own width)
        self._probe_credit, self._last_probe = 0.0, self.rounds
        return True

    def _probe_price(self, bs: int, width: int) -> float:
        """Seconds a probe adds to a round at (bs, width): the measured head forward at the full
        rows minus the one at this width's rows (0 at width 1: no head forward), once both were
        timed at this batch size; else the mean seconds per head row times the extra rows. At
        least one head row per request either way (the full-budget trees are built too)."""
        rows = min(self.full_rows, width - 1)
        full, now = self._draft_s.get((bs, self.full_rows)), 0.0 if rows == 0 else self._draft_s.get((bs, rows))
        if full is not None and now is not None:
            extra = full - now
        else:
            extra = self._row_s * bs * (self.full_rows - rows)
        return max(extra, self._row_s * bs)

    def note_draft(self, bs: int, rows: int, seconds: float) -> None:
        """The head's forward of this round: bs requests x rows depth rows in `seconds`. Kept per
        (bs, rows) and as a mean per row (fixed costs included: it errs on the dear side)."""
        if rows < 1 or bs < 1 or not seconds > 0:
            return
        per_row = seconds / (bs * rows)
        self._row_s = per_row if self._row_s is None else self._row_s + 0.2 * (per_row - self._row_s)
        old = self._draft_s.get((bs, rows))
        self._draft_s[(bs, rows)] = seconds if old is None else old + 0.2 * (seconds - old)

    def publish_reserve(self) -> int:
        """The KV width to reserve for the next step (the worker hands it to kv_reserve.py
        between steps); the next plan is capped by it."""
        self.reserve = self.next_reserve
        return self.reserve

    def _exploration_for(self, r: int) -> tuple[str, float] | None:
        """What exploration imposes on round r (0-based), or None: ("ladder", width) in the first
        warm-up pass, ("pick", u) with u in [0, 1) later (a ladder position among the widths the
        cost bound allows, resolved by _explore_width). Drawn one round ahead so that the KV
        reserve of round r already holds it."""
        if r < len(self.widths):
            return ("ladder", float(self.widths[r]))
        if r < self.warmup_rounds:
            return ("pick", (r % len(self.widths) + 0.5) / len(self.widths))
        if self.explore_every and r % self.explore_every == 0:
            return ("pick", self.rng.random())
        return None

    def _explore_width(self, explore: tuple[str, float], bs: int) -> int:
        kind, x = explore
        if kind == "ladder":
            return int(x)
        cost = self.step_cost
        limit = self.explore_cost_factor * cost(bs, self._chosen)
        allowed = [w for w in self.widths if cost(bs, w) <= limit] or [1]
        return allowed[min(int(x * len(allowed)), len(allowed) - 1)]

    # ---- after verifying --------------------------------------------------------------------

    def observe(self, trees: list[DraftTree], built_budgets: list[int], accepted_paths: list[list[int]],
                bonus_tokens: list[int | None] | None, seconds: float,
                probe_trees: list[DraftTree] | None = None, probe_budgets: list[int] | None = None) -> None:
        """One verified step: the trees (each of budget built_budgets[r], all verified), the
        accepted node indices from the root, the bonus tokens (None where they do not label the
        children: sampled requests on SGLang's GPU tree sampling) and the round's wall time.
        A probe round also passes each request's tree at its full budget (probe_budgets): the
        curve learns from those, and the round's time is not a price of its width."""
        if self.controller is None or self.last is None:
            return
        t0 = time.perf_counter()
        try:
            self._observe(trees, built_budgets, accepted_paths, bonus_tokens, seconds, probe_trees, probe_budgets)
        finally:
            self.own_seconds += time.perf_counter() - t0

    def _observe(self, trees, built_budgets, accepted_paths, bonus_tokens, seconds, probe_trees, probe_budgets):
        probe = probe_trees is not None
        if probe and (probe_budgets is None or len(probe_budgets) != len(probe_trees) or len(probe_trees) != len(trees)):
            raise ValueError("probe_trees and probe_budgets must give one tree and budget per request")
        d = self.last
        planned = d.width  # what plan() chose: the width this round's time prices
        if not probe and all(t.n == 1 for t in trees):  # plain decoding: no curve, no bias to learn
            d.per_request_budgets, d.width = [1] * len(trees), 1
            self._note_time(len(trees), planned, seconds)
            self.controller.observe(trees, d, accepted_paths, bonus_tokens, seconds)
            return
        # before learning from this round; Python lists: the curve's arithmetic is on a few
        # dozen numbers, where tensor ops cost more than the work
        pre = [p.tolist() for p in self.controller.calibrator.trees_probs(trees)]
        self._track_bias(sum(sum(p) for p in pre), sum(len(p) - 1 for p in accepted_paths), len(trees),
                         sum(t.n for t in trees))
        d.per_request_budgets = [t.n for t in trees]
        d.width = max(d.per_request_budgets)  # the rows actually verified (trees may be cut short)
        if not probe:
            # keyed by the PLANNED width: plan() prices its candidates by these means, and a
            # width whose trees come out smaller (cut by the head's top-k, a request's remaining
            # length, expert pruning) would otherwise never be measured: seen on the MoE target,
            # width 64 planned 19 rounds in a row, verified 45-59 rows at 83-91 ms each, and kept
            # its 58 ms price from the linear model
            self._note_time(len(trees), planned, seconds)
        self.controller.observe(trees, d, accepted_paths, bonus_tokens, None if probe else seconds)
        self._update_empirical(trees, built_budgets, accepted_paths)
        if probe:  # the curve learns from the full-budget trees
            self._update_curve(probe_trees, probe_budgets)
        else:  # the probabilities from before this round's update: one calibration pass less
            self._update_curve(trees, built_budgets, pre)

    def _note_time(self, bs: int, width: int, seconds: float) -> None:
        m = self.measured.setdefault((bs, width), [seconds, 0])
        m[0] += (seconds - m[0]) * (1.0 if m[1] == 0 else self.measured_alpha)
        m[1] += 1

    def step_cost(self, bs: int, width: int) -> float:
        """Seconds of a step at (bs, width): the width cost table of this batch size (measured
        means shrunk toward the fitted model and made non-decreasing in width; the model where
        nothing was measured), built once per plan()."""
        if not 1 <= width <= self.max_width:
            return self.controller.cost(bs, width)
        return self.cost_table(bs)[width - 1]

    def cost_table(self, bs: int) -> list[float]:
        """step_cost(bs, w) for w = 1..max_width (cached within one plan())."""
        table = None if self._costs is None else self._costs.get(bs)
        if table is None:
            measured = {w: (m[0], m[1]) for (b, w), m in self.measured.items() if b == bs}
            model = self._model_costs(bs)
            table = width_costs(self.max_width, measured, lambda w: model[w - 1], self.cost_prior_rounds)
            if self._costs is not None:
                self._costs[bs] = table
        return table

    def _model_costs(self, bs: int) -> list[float]:
        """The fitted cost model's price of widths 1..max_width at this batch size, re-solved
        once MODEL_REFIT_ROUNDS steps were observed since the last solve (a solve is 2^p small
        least-squares problems, ~0.15 ms on a CPU; a few steps move a fit of hundreds little)."""
        cost = self.controller.cost
        seen = getattr(cost, "observations", None)  # None: a cost without a fit, priced every time
        cached = self._model_cache.get(bs)
        if cached is not None and seen is not None and seen - cached[0] < MODEL_REFIT_ROUNDS:
            return cached[1]
        if hasattr(cost, "costs"):
            table = cost.costs(bs, self.max_width)
        else:
            table = [float(cost(bs, w)) for w in range(1, self.max_width + 1)]
        if seen is not None:
            self._model_cache[bs] = (seen, table)
        return table

    def _track_bias(self, predicted: float, actual: int, requests: int, nodes: int) -> None:
        if nodes <= requests:  # roots only (width 1): nothing predicted, nothing to learn
            return
        a, p = actual / requests, predicted / requests
        if self._actual is None:
            self._actual, self._predicted = a, p
        else:
            self._actual += self.curve_alpha * (a - self._actual)
            self._predicted += self.curve_alpha * (p - self._predicted)

    def _update_empirical(self, trees: list[DraftTree], built_budgets: list[int],
                          accepted_paths: list[list[int]]) -> None:
        """Per best-first rank, the share of verified nodes the target accepted (a node is
        accepted when it lies on its request's accepted path). Nodes are stored best-first, so
        node i of a verified tree is its rank i whatever the width, and its outcome does not
        depend on the rest of the tree: the mean is an unbiased estimate of the curve there."""
        k = len(self.emp)
        if not k:
            return
        hits = [0] * k
        reach = [0] * (k + 1)  # reach[m]: trees whose first m ranks were verified (and no more)
        for t, b, path in zip(trees, built_budgets, accepted_paths):
            m = min(t.n - 1, b - 1, k)
            if m <= 0:
                continue
            reach[m] += 1
            for j in path[1:]:
                if 1 <= j <= m:
                    hits[j - 1] += 1
        if not any(reach):
            return
        emp, weight, last = self.emp.tolist(), self.emp_weight.tolist(), self.emp_round.tolist()
        count = 0
        for i in range(k - 1, -1, -1):  # count of rank i = trees verified beyond it
            count += reach[i + 1]
            if not count:
                continue
            old = weight[i] * (1.0 - EMP_DECAY) ** _skipped(self.rounds, last[i])
            total = old + count
            prev = 0.0 if emp[i] != emp[i] else emp[i]
            emp[i] = (old * prev + hits[i]) / total
            weight[i], last[i] = min(total, EMP_CAP), float(self.rounds)
        self.emp = torch.tensor(emp, dtype=torch.float64)
        self.emp_weight = torch.tensor(weight, dtype=torch.float64)
        self.emp_round = torch.tensor(last, dtype=torch.float64)

    def curve(self) -> torch.Tensor:
        """[max_width - 1] expected acceptance of each best-first rank (float64): the observed
        rate where the rank has been verified, blended with the calibrated curve times the bias
        correction by their weights (EMP_PRIOR for the calibration); the calibrated curve
        alone where it never was. The scalar bias cannot fix a calibration that is off by
        different amounts at different ranks (measured on SmolLM2 code at batch 1: after rounds
        at width 2 it sat at its 0.8 floor and priced width 8 at 1.66 tokens a round where 2.0
        were committed)."""
        return torch.tensor(self._curve_list(), dtype=torch.float64)

    def _curve_list(self) -> list[float]:
        """curve() as a Python list (what plan() reads every step)."""
        bias, keep = self.bias_ratio, 1.0 - EMP_DECAY
        out = []
        for m, e, w, r in zip(self.marginal.tolist(), self.emp.tolist(), self.emp_weight.tolist(),
                              self.emp_round.tolist()):
            calibrated = (0.0 if m != m else m) * bias
            weight = w * keep ** _skipped(self.rounds, r)
            if weight > 0:
                calibrated = (weight * (0.0 if e != e else e) + EMP_PRIOR * calibrated) / (weight + EMP_PRIOR)
            out.append(min(1.0, max(0.0, calibrated)))
        return out

    @property
    def bias_ratio(self) -> float:
        """Accepted / calibrated-predicted draft nodes over recent rounds (1 until known)."""
        if self._actual is None or self._predicted is None or self._predicted < 1e-3:
            return 1.0
        return min(BIAS_MAX, max(BIAS_MIN, self._actual / self._predicted))

    def _update_curve(self, trees: list[DraftTree], built_budgets: list[int],
                      probs: list[list[float]] | None = None) -> None:
        """Running mean of the calibrated node probabilities by best-first rank. A rank only
        counts for trees that were built with room for it and filled it (a tree cut short by
        its request's own depth or remaining length says nothing about other requests)."""
        if not len(self.marginal):
            return
        if probs is None:
            probs = [p.tolist() for p in self.controller.calibrator.trees_probs(trees)]  # [n_r - 1] each
        k = len(self.marginal)
        total = [0.0] * k
        reach = [0] * (k + 1)  # reach[m]: trees that filled ranks 1..m (and no more)
        for p, b in zip(probs, built_budgets):
            m = min(len(p), b - 1, k)
            if m <= 0:
                continue
            reach[m] += 1
            for i in range(m):
                total[i] += p[i]
        if not any(reach):
            return
        marginal, last = self.marginal.tolist(), self.marginal_round.tolist()
        count = 0
        for i in range(k - 1, -1, -1):
            count += reach[i + 1]
            if not count:
                continue
            mean, old = total[i] / count, marginal[i]
            gap = max(1.0, self.rounds - last[i])  # rounds since the rank was last seen
            alpha = 1.0 - (1.0 - self.curve_alpha) ** gap
            marginal[i] = mean if old != old else old + alpha * (mean - old)
            last[i] = float(self.rounds)
        self.marginal = torch.tensor(marginal, dtype=torch.float64)
        self.marginal_round = torch.tensor(last, dtype=torch.float64)

    # ---- visibility --------------------------------------------------------------------------

    @property
    def adaptive(self) -> bool:
        return self.controller is not None

    def calibration_error(self, of: str = "calibrated") -> float | None:
        """The acceptance model's expected calibration error (None: static, or no data yet)."""
        if self.controller is None:
            return None
        x = self.controller.calibrator.expected_error(of)
        return None if x != x else float(x)

    def snapshot(self) -> dict:
        out = {"mode": self.mode, "max_width": self.max_width, "rounds": self.rounds,
               "width_hist": {str(k): v for k, v in sorted(self.width_hist.items())}}
        if self.controller is not None:
            c = self.controller
            out["last_width"] = self.last.width if self.last else None
            out["last_reason"] = self.last.reason if self.last else None
            out["reserve_width"] = self.reserve
            out["probes"] = self.probes
            out["close_calls"] = self.close_calls
            out["own_ms_per_round"] = 1000 * self.own_seconds / max(self.rounds, 1)
            # the measured step times that price widths (step_cost): "bs x width" -> [ms, rounds]
            out["measured_ms"] = {f"{bs}x{w}": [round(1000 * m[0], 2), m[1]]
                                  for (bs, w), m in sorted(self.measured.items()) if m[1] >= self.measured_min}
            out["calibration_error"] = self.calibration_error()
            out["draft_calibration_error"] = self.calibration_error("draft")
            out["cost"] = c.cost.coefficients
            out["recent_accept_length"] = c.acceptance.length
            out["bias_ratio"] = self.bias_ratio
            out["expected_tokens_curve"] = [1.0] + (1.0 + self.curve().cumsum(0)).tolist()
        return out

    def summary(self, stats) -> str:
        """One log line: widths chosen, nodes per request and accept length since start."""
        snap = self.snapshot()
        rr = max(stats.request_rounds, 1)
        line = (f"rounds {stats.rounds}, verify width {self.mode} "
                f"(hist {snap['width_hist']}), nodes/request {stats.nodes / rr:.1f}, "
                f"accept length {stats.committed / rr:.2f}")
        if snap.get("calibration_error") is not None:
            line += (f", calibration error {snap['calibration_error']:.3f} "
                     f"(raw draft {snap['draft_calibration_error']:.3f})")
        return line
