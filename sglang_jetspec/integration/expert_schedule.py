"""Expert-aware tree scheduling in the JETSPEC worker (issue 5), for Mixture-of-Experts targets.

Each round, between building the candidate trees and the verify forward:
  1. predict the experts every candidate node will activate per layer (core/expert_predictor.py,
     learned online from the experts the target actually routed earlier verify tokens to);
  2. price the batch with the online verify cost model (core/moe_cost.py: a + b tokens +
     c distinct experts) and keep the ancestor-closed node subset that maximises expected
     committed tokens per predicted second, giving up at most `max_expected_loss` of the
     candidates' expected tokens (core/expert_aware_tree.schedule_batch) or, by default in the
     worker, keeping nodes while they bring at least a price in expected tokens per predicted
     second (core/held_price.py), where that bound or price is held (core/loss_bound.py) so that
     the ACCEPTED LENGTH the pruning
     gives up is SGLANG_JETSPEC_EXPERT_LOSS (default 3%): a pruned round whose bonus tokens label
     it (greedy, the walk rule) observes its own loss (whether an accepted path ran into a pruned
     child is exact, the target's pick names it; how far it would have run is the model's
     expectation); where rounds do not label themselves (recursive rejection sampling), one
     pruning round in PROBE_EVERY decides what it would prune but verifies the candidates whole
     and compares what they committed with what the pruned trees would have. Node acceptance
     probabilities come from an online conditional model, P(node accepted | parent accepted) from
     the node's sibling rank and score step, levelled per depth, and split on the node's n-gram
     log-prob where the head has an n-gram prior (core/conditional_acceptance.py), trained here
     from verify outcomes, so it works with static widths. After a labelled pruned round it
     learns from the CANDIDATE trees (the pruned children of accepted nodes are labelled by the
     bonus token too), so pruning does not hide from it the nodes it prunes. It replaced the score
     calibrator (core/calibration.py) on 2026-12-07: in exact replays of the 64-expert target's
     recorded rounds it cuts more experts for the accepted length it gives up
     (docs/benchmarks.md, "What better acceptance predictions reach").
After the verify forward the experts SGLang's router picked for every verify row (its routed
experts capturer, `--enable-return-routed-experts`, which the plugin turns on for MoE targets)
update the predictor, the cost model and the counters (/get_server_info
`internal_states[0]["jetspec"]["experts"]`): distinct experts per verify, kept vs candidate nodes,
per-layer precision and recall of the prediction. A round of plain decoding (every tree its root,
the adaptive width's width 1) has nothing to prune: it skips prediction (precision, recall and
the predicted candidate experts count rounds with drafted nodes only; the routed experts still
teach the predictor and the cost model).

Pruning pays for itself or pauses (gate=True, the worker's setting): the scheduler times its own
work (prediction + the greedy) and the verify seconds its cost model says the pruning saved;
while the running mean of the saving is below that of its own time, it verifies the trees as
built and skips prediction too, except one round in PRUNE_RECHECK, which prunes and re-measures
both. Measured on the 8-expert top-2 CPU target at batch 16, width 2: 6.7 ms of scheduling per
round of ~70 ms (two thirds of the "tree" phase), where distinct experts fell by 0-5% with
pruning on this target (docs/benchmarks.md). Since 2026-12-07 the greedy runs in C++ (about 10x
faster: a batch of 32 budget-32 trees ~90-160 -> ~9 ms; docs/bench/cpu-qwen3moe-acceptance). The counters
that need a prediction (precision, recall, predicted candidate experts, expected-token shares)
then cover the rounds that ran it.

Lossless: pruning only chooses WHICH candidate nodes are verified; a kept node keeps its token and
all its ancestors, and acceptance (greedy, or the host walk rule) commits the target's own picks.

  SGLANG_JETSPEC_EXPERT_AWARE=on   (default on MoE targets) prune as above
  SGLANG_JETSPEC_EXPERT_AWARE=off  verify the best-first trees as built; routed experts are still
                                   read and counted, so the two settings are compared like for like
  SGLANG_JETSPEC_EXPERT_LOSS=0.03  the accepted-length share pruning may give up (0 < x < 0.5)
  SGLANG_JETSPEC_EXPERT_HOLD=price  (default) the held bound sets a price every round prunes at
                                   (core/held_price.py: the loss goes where pruning saves the
                                   most verify time); =fraction: each round gives up the same
                                   share of its own expected tokens (the rule before 2026-12-07)
  SGLANG_JETSPEC_EXPERT_TRACE=FILE  also write every verified round (trees, accepted paths, routed
                                   experts of every node, node probabilities, predicted
                                   experts) as a JSON line: `launch.replay_experts` replays such a
                                   trace (taken with scheduling off) offline, e.g. under simulated
                                   expert-parallel placements
Dense targets have no experts: the setting is ignored there (`on` is refused at startup).
"""

from __future__ import annotations

import json
import os
import time

import torch

from sglang_jetspec.core.conditional_acceptance import NGRAM_BINS, ConditionalAcceptance
from sglang_jetspec.core.expert_aware_tree import prune_tree, schedule_batch, schedule_value
from sglang_jetspec.core.held_price import ReferenceRates
from sglang_jetspec.core.expert_load import expert_union_counts
from sglang_jetspec.core.expert_predictor import ExpertPredictor, expert_sets
from sglang_jetspec.core.loss_bound import MAX_BOUND, WidthBounds, committed, pruned_outcome
from sglang_jetspec.core.moe_cost import MoeVerifyCostModel
from sglang_jetspec.core.tree import DraftTree
from sglang_jetspec.integration.env_setting import env_choice

ENV = "SGLANG_JETSPEC_EXPERT_AWARE"
TRACE_ENV = "SGLANG_JETSPEC_EXPERT_TRACE"
LOSS_ENV = "SGLANG_JETSPEC_EXPERT_LOSS"
HOLD_ENV = "SGLANG_JETSPEC_EXPERT_HOLD"
MODES = ("on", "off")
HOLD_KNOBS = ("price", "fraction")  # what the held bound sets; the worker's default first
# the worker's default: the share of the ACCEPTED LENGTH pruning may give up, held with probe
# rounds (core/loss_bound.py), the quantity issue 5 bounds at 3%
LOSS_TARGET = 0.03
# without a held loss (the class's default; replays): at most 1% of the candidates' EXPECTED
# tokens given up. The acceptance model under-predicts deep nodes, so the accepted length fell
# 3-12% at a fixed 3% bound in the 64-expert server (docs/bench/cpu-qwen3moe-acceptance); at 1%
# it fell 0-1.3%
MAX_EXPECTED_LOSS = 0.01
PROBE_EVERY = 8  # held bound: one pruning round in this many is verified whole (core/loss_bound.py)
PRUNE_RECHECK = 8  # gated: one round in this many prunes (and measures) while pruning does not pay
GATE_ALPHA = 0.1  # running means of the pruning's own time and of the verify time it saves


def mode_from_env(environ=os.environ) -> str:
    return env_choice(environ, ENV, MODES)


def moe_shape(hf_config) -> tuple[int, int, int] | None:
    """(layers, experts per layer, experts per token) of an MoE target config, None if dense."""
    experts = getattr(hf_config, "num_experts", None) or getattr(hf_config, "num_local_experts", None)
    top_k = getattr(hf_config, "num_experts_per_tok", None)
    if not experts or not top_k:
        return None
    return int(hf_config.num_hidden_layers), int(experts), int(top_k)


def hold_knob_from_env(environ=os.environ) -> str:
    """SGLANG_JETSPEC_EXPERT_HOLD: price (default) or fraction."""
    return env_choice(environ, HOLD_ENV, HOLD_KNOBS)


def loss_from_env(environ=os.environ) -> float:
    """SGLANG_JETSPEC_EXPERT_LOSS (default LOSS_TARGET): the accepted-length share to hold."""
    raw = environ.get(LOSS_ENV, "").strip()
    if not raw:
        return LOSS_TARGET
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < MAX_BOUND:
        raise ValueError(f"{LOSS_ENV}={raw!r} must be a number in (0, {MAX_BOUND}): the share of the "
                         f"accepted length expert-aware pruning may give up (default {LOSS_TARGET})")
    return value


def check_expert_mode(hf_config, environ=os.environ) -> list[str]:
    """Startup errors: a typo in the settings, or `on` for a dense target."""
    try:
        mode = mode_from_env(environ)
        loss_from_env(environ)
        hold_knob_from_env(environ)
    except ValueError as exc:
        return [str(exc)]
    if ENV in environ and mode == "on" and moe_shape(hf_config) is None:
        return [f"{ENV}=on needs a Mixture-of-Experts target (num_experts and num_experts_per_tok "
                f"in its config); {getattr(hf_config, 'model_type', '?')} is dense"]
    return []


class ExpertScheduler:
    def __init__(self, num_layers: int, num_experts: int, top_k: int, prune: bool = True,
                 max_expected_loss: float = MAX_EXPECTED_LOSS, patience: int | None = 16,
                 trace_path: str | None = None, gate: bool = False, hold_loss: float | None = None,
                 probe_every: int = PROBE_EVERY, prior=None, hold_knob: str = "fraction"):
        if hold_knob not in HOLD_KNOBS:
            raise ValueError(f"hold_knob {hold_knob!r} must be one of {list(HOLD_KNOBS)}")
        self.L, self.E, self.K, self.prune = num_layers, num_experts, top_k, prune
        # prior: the head's n-gram prior (core/pair_prior.PairPrior) or None; with one, the
        # acceptance model also splits on each node's n-gram log-prob (NGRAM_BINS)
        self.prior = prior
        self._prev: list[int] | None = None  # the committed token before each anchor, this round
        # hold_loss: the ACCEPTED-LENGTH loss held with observed rounds (core/loss_bound.py: labelled
        # pruned rounds, else probes); the bound on the model's expected tokens then moves,
        # starting from hold_loss
        # (none when not pruning: nothing to hold); one bound per tree width (core/loss_bound.py)
        self.hold = WidthBounds(hold_loss, probe_every) if hold_loss is not None and prune else None
        self._held = None  # this round's width's bound (WidthBounds.for_width)
        # hold_knob "price": the bound sets a price per expected token (core/held_price.py) on a
        # running reference rate per width; "fraction": the share of each round's expected tokens
        self.hold_knob, self.rates, self.price = hold_knob, ReferenceRates(), None
        self._probe_kept: list[set[int]] | None = None
        # a pruned round's candidate trees, kept candidate indices and node probabilities: what
        # observe() learns from and estimates the round's loss with (core/loss_bound.pruned_outcome)
        self._cand: tuple | None = None
        # this round's n-gram log-probs per tree object (id -> (tree, values)): computed once for
        # the candidates, reused for the same trees or sliced for their sub-trees in observe()
        self._ngram_memo: dict[int, tuple[DraftTree, torch.Tensor]] = {}
        self._logps: list[torch.Tensor] | None = None  # per verified tree, for the trace
        self.gate, self.clock = gate, time.perf_counter
        self.own_s = self.saved_s = None  # running means per pruning round (seconds)
        self.gated_rounds, self._since_check = 0, 0
        self.max_expected_loss, self.patience = max_expected_loss, patience
        self.predictor = ExpertPredictor(num_layers, num_experts, top_k)
        self.cost = MoeVerifyCostModel(num_layers, top_k)
        self.acceptance = ConditionalAcceptance(logp_bins=NGRAM_BINS if prior is not None else ())
        self._predicted: list[torch.Tensor] | None = None  # [n_b, L, K] of the verified trees
        self._probs: list[torch.Tensor] | None = None  # [n_b - 1] P(accepted), of the verified trees
        self._trace = open(trace_path, "a") if trace_path else None
        self.rounds = 0
        self.candidate_nodes = self.kept_nodes = self.verify_rows = 0
        self.distinct = torch.zeros(num_layers, dtype=torch.float64)  # summed over rounds
        self.candidate_distinct = torch.zeros(num_layers, dtype=torch.float64)  # predicted, unpruned
        self.verify_seconds = 0.0
        self.candidate_expected = self.kept_expected = 0.0  # predicted expected committed tokens
        self.tp = torch.zeros(num_layers, dtype=torch.float64)
        self.fp = torch.zeros(num_layers, dtype=torch.float64)
        self.fn = torch.zeros(num_layers, dtype=torch.float64)

    # ---- before the verify forward ----------------------------------------------------------

    @property
    def wants_draft_logprobs(self) -> bool:
        """Whether `schedule` should get each node's own draft log-prob (the trace records it)."""
        return self._trace is not None

    def schedule(self, trees: list[DraftTree], prev_tokens: list[int],
                 draft_logprobs: list[torch.Tensor] | None = None) -> list[DraftTree]:
        """The trees to verify: pruned (prune=True) or as built; predictions kept for metrics.
        draft_logprobs: per tree [n] each node's own draft log-prob (core/tree.node_draft_logprobs),
        recorded in the trace."""
        self._logps, self._prev, self._cand = draft_logprobs, list(prev_tokens), None
        self._ngram_memo = {}
        if all(t.n == 1 for t in trees):  # plain decoding: nothing to prune, nothing to predict
            self.candidate_nodes += len(trees)
            self.candidate_expected += len(trees)
            self.kept_expected += len(trees)
            self._predicted = self._probs = None
            return trees
        if self._gated():
            self.gated_rounds += 1
            self.candidate_nodes += sum(t.n for t in trees)
            self._predicted = self._probs = None
            return trees
        t0 = self.clock()
        experts = self.predictor.predict_trees(trees, prev_tokens)
        self.candidate_nodes += sum(t.n for t in trees)
        union = _union_counts(experts, self.E)
        self.candidate_distinct += union
        ngram = self._ngram(trees)
        probs = self.acceptance.trees_probs(trees, ngram)
        full = len(trees) + sum(float(p.sum()) for p in probs)  # expected tokens of the candidates
        self.candidate_expected += full
        if not self.prune or all(t.n == 1 for t in trees):
            self._predicted, self._probs = experts, probs
            self.kept_expected += full
            return trees
        widest = max(t.n for t in trees)
        self._held = self.hold.for_width(widest) if self.hold is not None else None
        bound = self._held.bound if self._held is not None else self.max_expected_loss
        priced = self._held is not None and self.hold_knob == "price"
        how = (self.rates.stop_at(widest, bound, self.hold.target,
                                  lambda: schedule_value(trees, probs, experts, None, self.cost))
               if priced else {"max_expected_loss": bound})
        self.price = how.get("price")
        s = schedule_batch(trees, probs, experts, self.cost, pad_to_widest=True, patience=self.patience, **how)
        if priced:
            self.rates.after(widest, s)
        if self._held is not None and self._held.next_is_probe():
            # verify the candidates whole; observe() compares what they commit with what the
            # pruned trees would have committed
            self._probe_kept = [set(k.tolist()) for k in s.kept]
            self._predicted, self._probs = experts, probs
            self.kept_expected += full
            return trees
        if draft_logprobs is not None:
            self._logps = [lp[k] for lp, k in zip(draft_logprobs, s.kept)]
        self._predicted = [e[k] for e, k in zip(experts, s.kept)]
        self._probs = [p[k[1:] - 1] for p, k in zip(probs, s.kept)]
        self._cand = (trees, [k.tolist() for k in s.kept], [p.tolist() for p in probs])
        if ngram is not None:  # the verified trees' values are the candidates', sliced
            for t, v, k in zip(s.trees, ngram, s.kept):
                self._ngram_memo.setdefault(id(t), (t, v[k]))
        self.kept_expected += s.expected_tokens
        if self.gate:  # what the pruning saved by the cost model, against what it took
            full = self.cost.predict(len(trees) * max(t.n for t in trees), union)
            self._note_gate(self.clock() - t0, max(0.0, full - s.seconds))
        return s.trees

    def _gated(self) -> bool:
        """Whether this round skips prediction and pruning (gate on, and it did not pay)."""
        if not (self.gate and self.prune) or self.own_s is None or self.saved_s >= self.own_s:
            return False
        self._since_check += 1
        if self._since_check >= PRUNE_RECHECK:
            self._since_check = 0
            return False
        return True

    def _note_gate(self, own: float, saved: float) -> None:
        if self.own_s is None:
            self.own_s, self.saved_s = own, saved
        else:
            self.own_s += GATE_ALPHA * (own - self.own_s)
            self.saved_s += GATE_ALPHA * (saved - self.saved_s)

    def learn_prefill(self, tokens: torch.Tensor, routed: torch.Tensor, extend_lens: list[int]) -> None:
        """Prompt tokens are routed too: learn from a prefill forward (tokens [T] in batch order,
        routed [T, L, K], extend_lens per request; the pair context restarts per request)."""
        tokens, routed = tokens.to("cpu").long(), routed.to("cpu").long()
        start = 0
        for e in extend_lens:
            if e > 0:
                self.predictor.update_sequence(tokens[start:start + e], routed[start:start + e])
            start += e

    # ---- after it -----------------------------------------------------------------------------

    def observe(self, trees: list[DraftTree], n: int, routed: torch.Tensor | None,
                accepted_paths: list[list[int]], bonus_tokens: list[int | None], seconds: float) -> None:
        """One verified round: the trees as verified (each padded to n rows), routed [bs*n, L, K]
        the experts the target's router picked for every verify row (None: not captured), the
        accepted node indices per tree, the bonus tokens (None where they do not label the
        children), the verify forward's wall time."""
        learned = self._learn_pruned(trees, accepted_paths, bonus_tokens)
        if learned is None:  # verified whole (or no labels): learn from the trees as verified
            self.acceptance.update_from_trees(trees, accepted_paths, [t.n for t in trees], bonus_tokens,
                                              self._ngram(trees))
        else:
            self.acceptance.update_from_trees(*learned, None, None, self._ngram(learned[0]))
        if self._probe_kept is not None:
            if len(self._probe_kept) == len(accepted_paths):
                self._held.observe(sum(len(p) for p in accepted_paths),
                                  sum(committed(p, k) for p, k in zip(accepted_paths, self._probe_kept)))
            self._probe_kept = None
        self.rounds += 1
        self.kept_nodes += sum(t.n for t in trees)
        self.verify_rows += len(trees) * n
        self.verify_seconds += seconds
        if routed is None:
            return
        routed = routed.to("cpu").long()
        if tuple(routed.shape[:2]) != (len(trees) * n, self.L):
            raise ValueError(f"routed experts shape {tuple(routed.shape)} must be [bs*n = {len(trees) * n}, "
                             f"L = {self.L}, K]")
        distinct = _union_counts([routed], self.E)  # every row of the forward pays, padding included
        self.distinct += distinct
        self.cost.observe(len(trees) * n, distinct, max(seconds, 1e-6))
        real = torch.cat([b * n + torch.arange(t.n) for b, t in enumerate(trees)])
        actual = routed[real]  # [N, L, K]
        tokens = torch.cat([t.tokens.cpu().long() for t in trees])
        parents = [torch.where(t.parents >= 0, t.tokens[t.parents.clamp_min(0)], torch.tensor(-1)).cpu().long()
                   for t in trees]
        if self._predicted is not None and sum(p.shape[0] for p in self._predicted) == actual.shape[0]:
            pred = torch.cat(self._predicted)
            a, p = expert_sets(actual, self.E), expert_sets(pred, self.E)  # [N, L, E]
            self.tp += (a & p).sum((0, 2)).double()
            self.fp += (p & ~a).sum((0, 2)).double()
            self.fn += (a & ~p).sum((0, 2)).double()
        if self._trace is not None:
            self._write_trace(trees, n, routed, accepted_paths, self._ngram(trees))
        self._predicted = self._probs = None
        self.predictor.update(tokens, actual, torch.cat(parents))

    def _learn_pruned(self, trees: list[DraftTree], accepted_paths: list[list[int]],
                      bonus_tokens: list[int | None]) -> tuple[list[DraftTree], list[list[int]]] | None:
        """After a pruned round whose bonus tokens label it: (the candidate trees less the nodes
        whose outcome stays unknown, the accepted paths in them) for the acceptance model, which
        thus also learns the outcomes of nodes it had pruned (in their candidate trees' sibling
        ranks, the ones it predicts with); and the round's loss, estimated, for the held bound.
        None when the round was verified whole or does not label itself (recursive rejection
        sampling)."""
        cand, self._cand = self._cand, None
        if cand is None or any(b is None for b in bonus_tokens):
            return None
        ctrees, kept, probs = cand
        if len(ctrees) != len(trees) or any(len(k) != t.n for k, t in zip(kept, trees)):
            return None
        out_trees, out_paths, full, pruned = [], [], 0.0, 0
        for t, k, p, path, pick in zip(ctrees, kept, probs, accepted_paths, bonus_tokens):
            known, cpath, lost = pruned_outcome(t.parents.tolist(), t.tokens.tolist(), k, p, path, pick)
            if len(known) < t.n:
                where = {v: i for i, v in enumerate(known)}
                memo = self._ngram_memo.get(id(t))
                t, cpath = prune_tree(t, torch.tensor(known)), [where[v] for v in cpath]
                if memo is not None:  # the candidate's values, sliced
                    self._ngram_memo[id(t)] = (t, memo[1][known])
            out_trees.append(t)
            out_paths.append(cpath)
            pruned += len(path)
            full += len(path) + lost
        if self._held is not None:
            self._held.observe(full, pruned, estimated=True)
        return out_trees, out_paths

    def _ngram(self, trees: list[DraftTree]) -> list[torch.Tensor] | None:
        """Each node's n-gram log-prob under the prior (None without one): the acceptance model's
        split. Computed on the trees as given (verified trees may have been pruned or, for
        recursive rejection sampling, redrawn), with this round's committed tokens before the
        anchors."""
        if self.prior is None:
            return None
        prev = self._prev if self._prev is not None and len(self._prev) == len(trees) else [None] * len(trees)
        out = []
        for t, p in zip(trees, prev):
            memo = self._ngram_memo.get(id(t))
            if memo is None or memo[0] is not t:
                memo = self._ngram_memo[id(t)] = (t, self.prior.node_logprobs(t, p))
            out.append(memo[1])
        return out

    def _write_trace(self, trees, n, routed, accepted_paths, ngram=None) -> None:
        rec = {"trees": [{"tokens": t.tokens.tolist(), "parents": t.parents.tolist(), "depths": t.depths.tolist(),
                          "scores": t.scores.tolist(), "ranks": t.ranks.tolist()} for t in trees],
               "paths": accepted_paths,
               "routed": [routed[b * n: b * n + t.n].tolist() for b, t in enumerate(trees)],
               "probs": None if self._probs is None else [p.tolist() for p in self._probs],
               "predicted": None if self._predicted is None else [e.tolist() for e in self._predicted]}
        if self._logps is not None and len(self._logps) == len(trees):
            rec["draft_logprobs"] = [[round(float(x), 5) for x in lp.tolist()] for lp in self._logps]
        if ngram is not None:
            rec["ngram_logprobs"] = [[round(float(x), 5) for x in lp.tolist()] for lp in ngram]
        self._trace.write(json.dumps(rec) + "\n")
        self._trace.flush()

    def snapshot(self) -> dict:
        r = max(self.rounds, 1)
        prec = (self.tp / (self.tp + self.fp).clamp_min(1)).tolist()
        rec = (self.tp / (self.tp + self.fn).clamp_min(1)).tolist()
        return {"prune": self.prune, "rounds": self.rounds, "candidate_nodes": self.candidate_nodes,
                "gated_rounds": self.gated_rounds,
                "own_ms": None if self.own_s is None else 1000 * self.own_s,
                "saved_ms": None if self.saved_s is None else 1000 * self.saved_s,
                "kept_nodes": self.kept_nodes, "verify_rows": self.verify_rows,
                "verify_seconds": self.verify_seconds,
                "distinct_per_layer_sum": self.distinct.tolist(),
                "candidate_predicted_distinct_sum": self.candidate_distinct.tolist(),
                "mean_distinct_per_verify": float(self.distinct.sum()) / (r * self.L),
                "expected_tokens_kept_share": self.kept_expected / self.candidate_expected
                if self.candidate_expected else None,
                "precision_per_layer": prec, "recall_per_layer": rec,
                "cost": self.cost.coefficients,
                "held": self.hold.snapshot() if self.hold is not None else None,
                "hold_knob": self.hold_knob if self.hold is not None else None,
                "price": self.price,  # the latest round's (expected tokens per predicted second)
                "reference_rates": {str(k): v for k, v in sorted(self.rates.by_width.items())}}


def _union_counts(expert_ids: list[torch.Tensor], num_experts: int) -> torch.Tensor:
    """Distinct experts per layer over the rows of all the given [m, L, K] tensors: [L]."""
    rows = torch.cat([e.to("cpu").long() for e in expert_ids])[None]  # [1, N, L, K]
    valid = torch.ones(rows.shape[:2], dtype=torch.bool)
    return expert_union_counts(rows, valid, num_experts, batch=True).double()
