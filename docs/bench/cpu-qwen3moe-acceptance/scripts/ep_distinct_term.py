"""EP experiment: add a distinct-expert term (weight w x d / R) to the maxrank cost in the greedy.

    python docs/bench/cpu-qwen3moe-acceptance/scripts/ep_distinct_term.py TRACE WEIGHTS EPS   (e.g. build/s33/e64_trace_big.jsonl 0,0.5 8,4,2)

Run from the repository root (the 64-expert head's prior is read from models/).
"""
import sys
import sglang_jetspec.bench.expert_replay as er
from sglang_jetspec.core.pair_prior import PairPrior
from sglang_jetspec.integration.expert_schedule import PROBE_EVERY

trace, ws = sys.argv[1], [float(x) for x in sys.argv[2].split(",")]
eps = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "2,4,8").split(",")]
rounds = er.with_ngram(er.load_trace(trace), PairPrior.load("models/qwen3moe-e64-jetspec"))
orig = er.schedule_batch
COST = {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": None}
for ep in eps:
    for w in ws:
        def patched(trees, probs, experts, k, expert_to_rank=None, _w=w, _ep=ep, **kw):
            k = dict(k)
            if expert_to_rank is not None:
                k["c"] = _w * k["d"] / _ep
            return orig(trees, probs, experts, k, expert_to_rank=expert_to_rank, **kw)
        er.schedule_batch = patched
        row = er.replay(rounds, 64, ep, COST, None, False, "ngram", {"target": 0.03, "probe_every": PROBE_EVERY}, labels=True)
        row["acceptance"] = f"ngram, distinct weight {w}"
        print(er.markdown([row]).splitlines()[-1], flush=True)
