"""Where should a round's pruning stop: at a share of its own expected tokens (the server's held
fraction), or where the next nodes' expected tokens per second fall below a price shared by all
rounds (a Lagrangian: equal marginal rates everywhere is what minimises total verify cost at a
total accepted-length loss)? Both knobs pick a prefix of the same greedy addition order, so one
order per round serves every setting. Replays an expert trace with the n-gram split acceptance
model and the replay's GPU-like cost (under EP the most-loaded rank prices the experts).

    python docs/bench/cpu-qwen3moe-acceptance/scripts/price_allocation.py MODE TRACE NUM_EXPERTS HEAD EP [SEGMENTS]

MODE "sweep": fixed knobs (fractions; absolute prices as multiples of the trace's median
full-tree rate; relative prices m x this round's full-tree rate), the experts cut interpolated at
3% accepted-length loss over all rounds and, tuned per class, per segment x width bucket.
MODE "held": the server's controller (core/loss_bound.WidthBounds, labels) holding 3% with each
knob: the fraction, a relative price (m x this round's own rate), and the absolute price the
server keeps since (core/held_price.py: a running reference rate per width bucket), checked
against `bench/expert_replay.replay(knob="price")`.
SEGMENTS e.g. "0:259:math,259:398:code b1,398:444:code b4" (first:end:name of the rounds).
"""
import sys

import numpy as np
import torch

from sglang_jetspec.bench.expert_replay import _labelled_loss, _loads, load_trace, replay, with_acceptance, with_ngram
from sglang_jetspec.core import expert_load as el
from sglang_jetspec.core.expert_aware_tree import _coefficients, _flatten, _GreedyState, _rank_info, schedule_batch
from sglang_jetspec.core.held_price import PRICE_AT_TARGET, ReferenceRates, price_of
from sglang_jetspec.core.loss_bound import WidthBounds, committed, width_bucket
from sglang_jetspec.core.pair_prior import PairPrior
from sglang_jetspec.integration.expert_schedule import PROBE_EVERY

TARGET = 0.03
mode, path, E, head, ep = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
segments = [(int(a), int(b), name) for a, b, name in (x.split(":", 2) for x in sys.argv[6].split(","))] \
    if len(sys.argv) > 6 else []
rounds = with_acceptance(with_ngram(load_trace(path), PairPrior.load(head)), "ngram")
e2r = el.contiguous_expert_to_rank(E, ep) if ep > 1 else None
COST = {"a": 1e-3, "b": 2e-6, "c": 0.0, "d": 1e-4} if ep > 1 else {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": 0.0}
print(f"# {mode}: {path}: {len(rounds)} rounds, ep {ep}")


def greedy_order(batch):
    """The greedy's addition order (expert_aware_tree._greedy_python's) with the expected tokens
    and predicted seconds after each prefix (index 0: the roots alone)."""
    e2, ranks = _rank_info(e2r)
    st = _GreedyState(batch, _coefficients(COST, e2r), e2, ranks, True)
    gain, expected = batch.probs, float(len(batch.sizes))
    order, cum_e, cum_s = [], [expected], [st.seconds]
    while bool(st.frontier.any()):
        dc = st.marginal_costs()
        free = st.frontier & (dc <= 0) & (gain > 0)
        v = (int(torch.where(free, gain, -1.0).argmax()) if bool(free.any()) else
             int(torch.where(st.frontier, gain / dc.clamp_min(1e-300), -1.0).argmax()))
        st.take(v, float(dc[v]))
        expected += float(gain[v])
        order.append(v), cum_e.append(expected), cum_s.append(st.seconds)
    return order, torch.tensor(cum_e, dtype=torch.float64), torch.tensor(cum_s, dtype=torch.float64)


def by_fraction(f, ce, cs):  # schedule_batch's rule: the best ratio among prefixes above the floor
    floor = (1 - f) * float(ce[-1]) - 1e-9 * float(ce[-1])
    return int(torch.where(ce >= floor, ce / cs, torch.tensor(-1.0, dtype=torch.float64)).argmax())


def by_price(lam, ce, cs):  # the prefix that maximises expected tokens - price x seconds
    return int((ce - lam * cs).argmax())


data = []
for i, r in enumerate(rounds):
    probs = [p.float().clamp(0, 1).double() for p in r.probs]
    batch = _flatten(r.trees, probs, r.predicted, e2r)
    order, ce, cs = greedy_order(batch)
    if i < 20:  # the fraction rule on this order is the library's schedule
        keep = batch.parents < 0
        keep[torch.tensor(order[:by_fraction(TARGET, ce, cs)], dtype=torch.long)] = True
        lib = schedule_batch(r.trees, probs, r.predicted, COST, expert_to_rank=e2r, max_expected_loss=TARGET)
        assert torch.equal(keep, torch.cat([torch.isin(torch.arange(n), k) for n, k in zip(batch.sizes, lib.kept)]))
    data.append((r, batch, order, ce, cs))


def kept_sets(batch, order, m):
    keep = batch.parents < 0
    keep[torch.tensor(order[:m], dtype=torch.long)] = True
    return [set(keep[o:o + n].nonzero().squeeze(1).tolist()) for o, n in zip(batch.offsets, batch.sizes)]


def classes(i, r):
    w = width_bucket(max(t.n for t in r.trees))
    return ["all"] + [name for a, b, name in segments if a <= i < b] + \
        [f"{name} @{w}" for a, b, name in segments if a <= i < b]


def add(tot, keys, r, full, kept):
    _, fm = _loads(r.routed, full, E, e2r, ep)
    _, pm = _loads(r.routed, kept, E, e2r, ep)
    ft = sum(committed(p, f) for p, f in zip(r.paths, full))
    pt = sum(committed(p, k) for p, k in zip(r.paths, kept))
    for key in keys:
        t = tot.setdefault(key, [0.0] * 4)
        t[0], t[1], t[2], t[3] = t[0] + ft, t[1] + pt, t[2] + fm, t[3] + pm


def loss_cut(t):  # accepted-length loss, cut of the experts that price a verify (most-loaded rank under EP)
    return 1 - t[1] / t[0], 1 - t[3] / t[2]


if mode == "sweep":
    def sweep(rule, knobs):
        out = []
        for q in knobs:
            tot = {}
            for i, (r, batch, order, ce, cs) in enumerate(data):
                add(tot, classes(i, r), r, [set(range(t.n)) for t in r.trees], kept_sets(batch, order, rule(q, ce, cs)))
            out.append({k: loss_cut(v) for k, v in tot.items()})
        return out

    def at_target(points):  # the cut at TARGET loss, interpolated along the knob's curve
        xs = np.maximum.accumulate(np.array([p[0] for p in points]))
        return float(np.interp(TARGET, xs, [p[1] for p in points])) if xs[-1] >= TARGET else float("nan")

    median = float(np.median([float(ce[-1] / cs[-1]) for *_, ce, cs in data]))
    knobs = {"fraction": (by_fraction, [0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.08,
                                        0.1, 0.15, 0.2, 0.3]),
             "absolute price": (lambda m, ce, cs: by_price(m * median, ce, cs),
                                [0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0]),
             "relative price": (lambda m, ce, cs: by_price(m * float(ce[-1] / cs[-1]), ce, cs),
                                [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0])}
    curves = {name: sweep(rule, qs) for name, (rule, qs) in knobs.items()}
    print("| rounds | " + " | ".join(f"{n}: cut at 3% loss" for n in knobs) + " |")
    print("|---|" + "---:|" * len(knobs))
    for key in curves["fraction"][0]:
        print(f"| {key}{' (one knob for all)' if key == 'all' else ' (knob tuned for it)'} | " +
              " | ".join(f"{at_target([c[key] for c in curves[n]]) * 100:.1f}%" for n in knobs) + " |")
else:
    print("| knob (held at 3% by labels) | " + " | ".join(["all"] + [s[2] for s in segments]) + " |")
    print("|---|" + "---:|" * (1 + len(segments)))
    for knob in ("fraction", "relative price", "absolute price"):
        hold, rates, tot = WidthBounds(TARGET, PROBE_EVERY), ReferenceRates(), {}
        for i, (r, batch, order, ce, cs) in enumerate(data):
            widest = max(t.n for t in r.trees)
            held = hold.for_width(widest)
            rate = float(ce[-1] / cs[-1])  # the whole candidate trees' expected tokens per second
            if knob == "fraction":
                m = by_fraction(held.bound, ce, cs)
            elif knob == "relative price":
                m = by_price(held.bound / TARGET * PRICE_AT_TARGET * rate, ce, cs)
            else:  # the server's: the reference of the earlier rounds of this width (the first: its own)
                ref = rates.get(widest)
                if ref is None:
                    ref = rates.update(widest, float(ce[-1]), float(cs[-1]))
                else:
                    rates.update(widest, float(ce[-1]), float(cs[-1]))
                m = by_price(price_of(held.bound, TARGET, ref), ce, cs)
            full, kept = [set(range(t.n)) for t in r.trees], kept_sets(batch, order, m)
            if widest > 1:
                if held.next_is_probe():
                    kept = full
                else:
                    held.observe(*_labelled_loss(r, kept), estimated=True)
            add(tot, classes(i, r)[:1 + len(segments)], r, full, kept)
        cells = [loss_cut(tot[k]) for k in ["all"] + [s[2] for s in segments] if k in tot]
        if knob == "absolute price":  # the library's replay of the server holds the same rounds
            lib = replay(rounds, E, ep, COST, None, acceptance="recorded",
                         hold={"target": TARGET, "probe_every": PROBE_EVERY}, per_width=True, knob="price")
            key = "max_rank" if ep > 1 else "distinct"
            assert abs(1 - lib["accept_length_pruned"] / lib["accept_length_full"] - cells[0][0]) < 1e-9
            assert abs(1 - lib[f"{key}_per_layer_pruned"] / lib[f"{key}_per_layer_full"] - cells[0][1]) < 1e-9
        print(f"| {knob} | " + " | ".join(f"-{l * 100:.1f}% / -{c * 100:.1f}%" for l, c in cells) + " |", flush=True)
