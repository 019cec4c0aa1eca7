"""Would two held loss bounds, keyed by the request's previous accepted length (>= 6 tokens or
not), hold the loss better per regime than one? Replays the batch-1 rounds of an expert trace
(consecutive rounds are mostly the same request) with the conditional model, the replay's GPU-like
cost, one device; prints per regime the accepted-length change and the experts' change.

    python docs/bench/cpu-qwen3moe-acceptance/scripts/regime_bounds.py TRACE NUM_EXPERTS
"""
import sys

from sglang_jetspec.bench.expert_replay import _loads, load_trace, with_acceptance
from sglang_jetspec.core.expert_aware_tree import schedule_batch
from sglang_jetspec.core.loss_bound import LossBound, committed
COST = {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": 0.0}
path, E = sys.argv[1], int(sys.argv[2])
rounds = [r for r in with_acceptance(load_trace(path), "conditional") if len(r.trees) == 1]
def run(keyed):
    bounds = {k: LossBound(0.03) for k in ("hi", "lo")}
    prev = 1; tot = {k: [0, 0] for k in ("hi", "lo")}; dist = [0.0, 0.0]
    for r in rounds:
        key = ("hi" if prev >= 6 else "lo") if keyed else "lo"
        h = bounds[key]
        s = schedule_batch(r.trees, [p.float().clamp(0, 1).double() for p in r.probs], r.predicted, COST, max_expected_loss=h.bound)
        kept = [set(x.tolist()) for x in s.kept]; full = [set(range(t.n)) for t in r.trees]
        if r.trees[0].n > 1 and h.next_is_probe():
            h.observe(len(r.paths[0]), committed(r.paths[0], kept[0])); kept = full
        rk = "hi" if prev >= 6 else "lo"
        tot[rk][0] += len(r.paths[0]); tot[rk][1] += committed(r.paths[0], kept[0])
        fd, _ = _loads(r.routed, full, E, None, 1); pd, _ = _loads(r.routed, kept, E, None, 1)
        dist[0] += fd; dist[1] += pd
        prev = len(r.paths[0])
    print("keyed" if keyed else "global", {k: f"{100*(v[1]/v[0]-1):+.1f}% of {v[0]}" for k, v in tot.items()},
          f"experts {100*(dist[1]/dist[0]-1):+.1f}%", {k: round(b.bound, 4) for k, b in bounds.items()})
run(False); run(True)
