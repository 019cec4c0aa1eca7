"""One held loss bound for every round, one per tree width learnt from that width's rounds only
("independent"), or one per width on a part all widths share (core/loss_bound.WidthBounds, the
server's since 2026-12-07 night: "shared")? Replays an expert trace with the n-gram split acceptance model,
held at 3% by labels, one device, the replay's GPU-like cost; prints per width bucket (the widest
candidate tree's node count rounded up to a power of two) the accepted-length change and the
distinct experts' change, and where each bound ended.

    python docs/bench/cpu-qwen3moe-acceptance/scripts/width_bounds.py TRACE NUM_EXPERTS HEAD [SEGMENTS]

SEGMENTS (optional), e.g. "0:259:math,259:398:code b1,398:444:code b4": also print per segment of
the trace's rounds (first:end:name) and width.
"""
import sys

from sglang_jetspec.bench.expert_replay import _labelled_loss, _loads, load_trace, with_acceptance, with_ngram
from sglang_jetspec.core.expert_aware_tree import schedule_batch
from sglang_jetspec.core.loss_bound import LossBound, WidthBounds, committed, width_bucket
from sglang_jetspec.core.pair_prior import PairPrior
from sglang_jetspec.integration.expert_schedule import PROBE_EVERY

COST = {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": 0.0}
path, E, head = sys.argv[1], int(sys.argv[2]), sys.argv[3]
segments = [(int(a), int(b), name) for a, b, name in (x.split(":", 2) for x in sys.argv[4].split(","))] \
    if len(sys.argv) > 4 else []
rounds = with_acceptance(with_ngram(load_trace(path), PairPrior.load(head)), "ngram")
print(f"# {path}: {len(rounds)} rounds")
for how in ("one bound", "independent", "shared"):
    bounds = WidthBounds(0.03, PROBE_EVERY) if how == "shared" else LossBound(0.03, PROBE_EVERY)
    own = {}  # independent: a LossBound per width
    seg = {}
    for i, r in enumerate(rounds):
        widest = max(t.n for t in r.trees)
        if how == "independent":
            held = own.setdefault(width_bucket(widest), LossBound(0.03, PROBE_EVERY))
        else:
            held = bounds.for_width(widest) if how == "shared" else bounds
        s = schedule_batch(r.trees, [p.float().clamp(0, 1).double() for p in r.probs], r.predicted, COST,
                           max_expected_loss=held.bound)
        full = [set(range(t.n)) for t in r.trees]
        kept = [set(x.tolist()) for x in s.kept]
        if widest > 1:
            if held.next_is_probe():
                kept = full
            else:
                held.observe(*_labelled_loss(r, kept), estimated=True)
        fd, _ = _loads(r.routed, full, E, None, 1)
        pd, _ = _loads(r.routed, kept, E, None, 1)
        where = [(name, width_bucket(widest)) for a, b, name in segments if a <= i < b]
        for key in [width_bucket(widest), "all"] + where:
            t = seg.setdefault(key, [0, 0, 0.0, 0.0, 0])
            t[0] += sum(committed(p, f) for p, f in zip(r.paths, full))
            t[1] += sum(committed(p, k) for p, k in zip(r.paths, kept))
            t[2] += fd
            t[3] += pd
            t[4] += 1
    ends = ({w: round(b.bound, 4) for w, b in sorted(bounds.by_width.items())} if how == "shared" else
            {w: round(b.bound, 4) for w, b in sorted(own.items())} if how == "independent" else round(bounds.bound, 4))
    print(f"{how}: bound(s) ended {ends}")
    def order(item):  # widths, then all, then the segments in the order given, by width
        k = item[0]
        if isinstance(k, tuple):
            return (2, [name for _, _, name in segments].index(k[0]), k[1])
        return (1, 0, 0) if k == "all" else (0, 0, k)
    for key, t in sorted(seg.items(), key=order):
        if t[0] == t[1] and t[2] == t[3]:
            continue  # rounds of roots only
        label = f"{key[0]}, width <= {key[1]}" if isinstance(key, tuple) else f"width <= {key}"
        print(f"  {label}: {t[4]} rounds, accepted length {100 * (t[1] / t[0] - 1):+.1f}% of {t[0]} tokens, "
              f"distinct experts {100 * (t[3] / t[2] - 1):+.1f}%")
