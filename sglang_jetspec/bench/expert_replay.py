"""Replay a JETSPEC expert trace (SGLANG_JETSPEC_EXPERT_TRACE, taken with expert-aware
scheduling OFF) to measure expert-aware pruning offline, exactly, under simulated placements.

Why exact: pruning only drops candidate nodes, and a kept node keeps all its ancestors, so its
verify context, its routing and its greedy outcome are the same as in the full tree the trace
recorded. Hence, for any kept subset:
  - the experts the verify activates are the union of the kept nodes' recorded routing (padding
    rows repeat the root, whose experts are already in);
  - the committed tokens are 1 + the kept prefix of the recorded accepted path (the bonus token
    is the target's pick at the last kept path node, which the full tree's next path node was).
What is simulated is only the COST the scheduler optimises: `a + b tokens + c distinct + d
max-rank` with coefficients given here (an EP deployment, not this CPU), and the placement
(SGLang's contiguous one: rank r holds experts [r E/R, (r+1) E/R)). The scheduler sees what it
sees in the server: the node probabilities and PREDICTED experts the trace recorded, never the
recorded routing. Other acceptance models can be replayed in place of the recorded
probabilities (`with_acceptance`: each learns round by round from the recorded accepted paths
and predicts a round before learning from it, as in the server), and two oracles bound what
better predictions could reach: the recorded routing as the expert prediction, the recorded
accepted paths as the node probabilities (1 on the path, 0 off it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sglang_jetspec.bench.jsonl import read_jsonl
from sglang_jetspec.core import expert_load as el
from sglang_jetspec.core.calibration import AcceptanceCalibrator
from sglang_jetspec.core.conditional_acceptance import NGRAM_BINS, ConditionalAcceptance
from sglang_jetspec.core.expert_aware_tree import schedule_batch, schedule_value
from sglang_jetspec.core.held_price import ReferenceRates
from sglang_jetspec.core.loss_bound import LossBound, WidthBounds, committed, pruned_outcome
from sglang_jetspec.core.tree import DraftTree


@dataclass
class Round:
    trees: list[DraftTree]
    paths: list[list[int]]
    routed: list[torch.Tensor]     # [n_b, L, K] the experts each node was routed to
    probs: list[torch.Tensor]      # [n_b - 1] P(accept) the scheduler saw
    predicted: list[torch.Tensor]  # [n_b, L, K] predicted experts the scheduler saw
    logps: list[torch.Tensor] | None = None  # [n_b] each node's own draft log-prob, if recorded
    ngram: list[torch.Tensor] | None = None  # [n_b] each node's n-gram log-prob, if recorded


def load_trace(path: str | Path) -> list[Round]:
    out = []
    for where, rec in read_jsonl(path, "expert trace", " (write one with SGLANG_JETSPEC_EXPERT_TRACE)"):
        trees = [DraftTree(torch.tensor(t["tokens"]), torch.tensor(t["parents"]), torch.tensor(t["depths"]),
                           torch.tensor(t["scores"], dtype=torch.float32), torch.tensor(t["ranks"]))
                 for t in rec["trees"]]
        routed = [torch.tensor(r) for r in rec["routed"]]
        logps = ([torch.tensor(x, dtype=torch.float32) for x in rec["draft_logprobs"]]
                 if rec.get("draft_logprobs") is not None else None)
        ngram = ([torch.tensor(x, dtype=torch.float64) for x in rec["ngram_logprobs"]]
                 if rec.get("ngram_logprobs") is not None else None)
        if rec.get("probs") is None or rec.get("predicted") is None:
            # the worker predicts nothing for a round of roots only (e.g. a request one token from
            # its limit): nothing to prune, so its own routing stands in for the prediction
            if any(t.n > 1 for t in trees):
                raise ValueError(f"{where}: round with drafted nodes but without probs/predicted experts")
            out.append(Round(trees, rec["paths"], routed, [torch.zeros(0, dtype=torch.float64)] * len(trees), routed,
                             logps, ngram))
            continue
        out.append(Round(trees, rec["paths"], routed,
                         [torch.tensor(p, dtype=torch.float64) for p in rec["probs"]],
                         [torch.tensor(e) for e in rec["predicted"]], logps, ngram))
    if not out:
        raise ValueError(f"expert trace {path} holds no rounds")
    return out


ACCEPTANCE = ("recorded", "calibrated", "conditional", "ngram", "oracle")


def with_ngram(rounds: list[Round], prior) -> list[Round]:
    """The rounds with each node's n-gram log-prob under `prior` (core/pair_prior.PairPrior) where
    the trace did not record it. A trace does not hold the token before each anchor, so depth-1
    nodes get the bigram's (the server uses the trigram there)."""
    return [r if r.ngram is not None else
            Round(r.trees, r.paths, r.routed, r.probs, r.predicted, r.logps,
                  [prior.node_logprobs(t, None) for t in r.trees]) for r in rounds]


def with_acceptance(rounds: list[Round], how: str) -> list[Round]:
    """The rounds with other node probabilities: "recorded" (as the server's scheduler saw them),
    "calibrated" (the score calibrator, core/calibration.py), "conditional"
    (core/conditional_acceptance.py), "ngram" (the same split on each node's n-gram log-prob, the
    server's model when the head has a prior: needs `Round.ngram`, see `with_ngram`), each replayed
    online from the first round, or "oracle"
    (1 for the nodes on the recorded accepted path, 0 for the others: the bound of a perfect
    acceptance prediction)."""
    if how not in ACCEPTANCE:
        raise ValueError(f"acceptance {how!r} must be one of {list(ACCEPTANCE)}")
    if how == "recorded":
        return rounds
    if how == "ngram" and any(r.ngram is None for r in rounds):
        raise ValueError("acceptance 'ngram' needs each node's n-gram log-prob: a trace recorded with a prior, "
                         "or the head's prior (--prior)")
    model = (AcceptanceCalibrator() if how == "calibrated" else
             ConditionalAcceptance(logp_bins=NGRAM_BINS if how == "ngram" else ()))
    out = []
    for r in rounds:
        if how == "oracle":
            probs = []
            for t, path in zip(r.trees, r.paths):
                on_path = torch.zeros(t.n, dtype=torch.float64)
                on_path[path] = 1.0
                probs.append(on_path[1:])
        elif how == "ngram":
            probs = [p.double() for p in model.trees_probs(r.trees, r.ngram)]
            model.update_from_trees(r.trees, r.paths, [t.n for t in r.trees], None, r.ngram)
        else:
            probs = [p.double() for p in model.trees_probs(r.trees)]
            model.update_from_trees(r.trees, r.paths, [t.n for t in r.trees])
        out.append(Round(r.trees, r.paths, r.routed, probs, r.predicted, r.logps, r.ngram))
    return out


def _loads(routed: list[torch.Tensor], keeps: list[set[int]], num_experts: int, e2r, ranks: int):
    """(distinct experts summed over layers, most-loaded-rank distinct experts summed over layers)."""
    rows = torch.cat([r[sorted(k)] for r, k in zip(routed, keeps)])  # [N, L, K]
    union = el.expert_union_mask(rows[None], torch.ones(1, rows.shape[0], dtype=torch.bool),
                                 num_experts, batch=True)  # [L, E]
    distinct = float(union.sum())
    max_rank = float(el.max_rank_load(union.long(), e2r, ranks).sum()) if e2r is not None else distinct
    return distinct, max_rank


def _labelled_loss(r: Round, kept: list[set[int]]) -> tuple[float, int]:
    """(full trees' committed tokens as a labelled pruned round estimates them, pruned trees'
    committed tokens) of one recorded round (core/loss_bound.pruned_outcome, as the server does).
    The pick after the pruned path's end is the recorded path's next token, or no child's token
    where the recorded path ends there."""
    full, pruned = 0.0, 0
    for t, path, kk, p in zip(r.trees, r.paths, kept, r.probs):
        ks = sorted(kk)
        m = committed(path, kk)
        where = {v: i for i, v in enumerate(ks)}
        pick = int(t.tokens[path[m]]) if m < len(path) else -1
        _, _, lost = pruned_outcome(t.parents.tolist(), t.tokens.tolist(), ks, p.double().clamp(0, 1).tolist(),
                                    [where[v] for v in path[:m]], pick)
        full += m + lost
        pruned += m
    return full, pruned


def replay(rounds: list[Round], num_experts: int, ep: int, cost: dict, max_expected_loss: float | None,
           oracle_routing: bool = False, acceptance: str = "recorded", hold: dict | None = None,
           labels: bool = True, per_width: bool = False, knob: str = "fraction"):
    """Totals over the trace for the full trees and the expert-aware pruned ones at placement ep.
    oracle_routing: the scheduler sees the experts each node was really routed to instead of the
    prediction (an upper bound: how much better pruning could get with a perfect predictor).
    acceptance: which node probabilities the scheduler sees (`with_acceptance`).
    hold: LossBound arguments (target, probe_every, ...): the bound is held with observed
    acceptance as in the server (core/loss_bound.py) instead of `max_expected_loss` fixed: each
    pruned round observes its own loss from its labels (the recorded rounds are greedy), or with
    labels=False (as a server sampling with recursive rejection) probe rounds measure it, which
    count as verified whole in the "pruned" totals, as they are in the server. per_width: a bound
    per tree width on a shared part (core/loss_bound.WidthBounds), as the server holds it since
    2026-12-07 night. knob: what the held bound sets, "fraction" (each round's share of its expected
    tokens) or "price" (core/held_price.py, the server's default since 2026-12-07 late night; a
    reference rate per width bucket, as the server keeps it)."""
    if knob not in ("fraction", "price"):
        raise ValueError(f"knob {knob!r} must be 'fraction' or 'price'")
    if knob == "price" and not hold:
        raise ValueError("knob 'price' needs a held loss (hold): the price is set by the held bound")
    rounds = with_acceptance(rounds, acceptance)
    bounds = (WidthBounds(**hold) if per_width else LossBound(**hold)) if hold else None
    held = bounds if not per_width else None
    rates, held_target = ReferenceRates(), hold["target"] if hold else None
    e2r = el.contiguous_expert_to_rank(num_experts, ep) if ep > 1 else None
    if ep > 1:  # under EP the slowest rank prices the experts
        k = {"a": cost["a"], "b": cost["b"], "c": 0.0, "d": cost.get("d") or cost["c"]}
    else:
        k = {"a": cost["a"], "b": cost["b"], "c": cost["c"], "d": 0.0}
    tot = {"rounds": 0, "requests": 0, "full_tokens": 0, "pruned_tokens": 0, "full_distinct": 0.0,
           "pruned_distinct": 0.0, "full_max_rank": 0.0, "pruned_max_rank": 0.0, "full_nodes": 0,
           "pruned_nodes": 0}
    layers = rounds[0].routed[0].shape[1]
    for r in rounds:
        widest = max(t.n for t in r.trees)
        if per_width and bounds is not None:
            held = bounds.for_width(widest)
        probs = [p.float().clamp(0, 1).double() for p in r.probs]
        experts = r.routed if oracle_routing else r.predicted
        priced = held is not None and knob == "price"
        how = (rates.stop_at(widest, held.bound, held_target,
                             lambda: schedule_value(r.trees, probs, experts, None, k, expert_to_rank=e2r))
               if priced else {"max_expected_loss": held.bound if held else max_expected_loss})
        s = schedule_batch(r.trees, probs, experts, k, expert_to_rank=e2r, **how)
        if priced:  # the server's rule (integration/expert_schedule.ExpertScheduler.schedule)
            rates.after(widest, s)
        full = [set(range(t.n)) for t in r.trees]
        kept = [set(x.tolist()) for x in s.kept]
        if held is not None and any(t.n > 1 for t in r.trees):
            if held.next_is_probe():
                held.observe(sum(len(p) for p in r.paths), sum(committed(p, kk) for p, kk in zip(r.paths, kept)))
                kept = full
            elif labels:
                held.observe(*_labelled_loss(r, kept), estimated=True)
        fd, fm = _loads(r.routed, full, num_experts, e2r, ep)
        pd, pm = _loads(r.routed, kept, num_experts, e2r, ep)
        tot["rounds"] += 1
        tot["requests"] += len(r.trees)
        tot["full_tokens"] += sum(committed(p, f) for p, f in zip(r.paths, full))
        tot["pruned_tokens"] += sum(committed(p, kk) for p, kk in zip(r.paths, kept))
        tot["full_distinct"] += fd
        tot["pruned_distinct"] += pd
        tot["full_max_rank"] += fm
        tot["pruned_max_rank"] += pm
        tot["full_nodes"] += sum(t.n for t in r.trees)
        tot["pruned_nodes"] += sum(len(kk) for kk in kept)
    n, req = tot["rounds"], tot["requests"]
    return {"ep": ep, "rounds": n, "oracle_routing": oracle_routing, "acceptance": acceptance,
            "held": bounds.snapshot() if bounds else None, "per_width": per_width, "knob": knob if hold else None, "held_by": ("labels" if labels else "probes") if held else None,
            "accept_length_full": tot["full_tokens"] / req, "accept_length_pruned": tot["pruned_tokens"] / req,
            "distinct_per_layer_full": tot["full_distinct"] / (n * layers),
            "distinct_per_layer_pruned": tot["pruned_distinct"] / (n * layers),
            "max_rank_per_layer_full": tot["full_max_rank"] / (n * layers),
            "max_rank_per_layer_pruned": tot["pruned_max_rank"] / (n * layers),
            "nodes_kept": tot["pruned_nodes"] / tot["full_nodes"]}


def _held_note(r: dict) -> str:
    h, by = r["held"], r.get("held_by") or "probes"
    if r.get("per_width"):
        ends = ", ".join(f"{w}: {x['bound']:.3f}" for w, x in h["by_width"].items() if int(w) > 1)
        return f"held at {h['target']:.0%} by {by} per width{_knob_note(r)}, bounds ended {ends}"
    return f"held at {h['target']:.0%} by {by}{_knob_note(r)}, bound ended {h['bound']:.3f}"


def _knob_note(r: dict) -> str:
    return " with a price" if r.get("knob") == "price" else ""


def markdown(rows: list[dict]) -> str:
    out = ["| placement | rounds | accept length full -> pruned | distinct experts / layer full -> pruned "
           "| most-loaded rank experts / layer full -> pruned | nodes kept |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        notes = (["oracle routing"] if r.get("oracle_routing") else []) + (
            [f"{r['acceptance']} acceptance"] if r.get("acceptance", "recorded") != "recorded" else []) + (
            [_held_note(r)] if r.get("held") else [])
        place = ("one device" if r["ep"] == 1 else f"ep = {r['ep']}") + (f" ({', '.join(notes)})" if notes else "")

        def ch(a, b):
            return f"{a:.2f} -> {b:.2f} ({100 * (b / a - 1):+.1f}%)" if a else "-"
        out.append(f"| {place} | {r['rounds']} | {ch(r['accept_length_full'], r['accept_length_pruned'])} | "
                   f"{ch(r['distinct_per_layer_full'], r['distinct_per_layer_pruned'])} | "
                   f"{ch(r['max_rank_per_layer_full'], r['max_rank_per_layer_pruned'])} | {r['nodes_kept']:.0%} |")
    return "\n".join(out)
