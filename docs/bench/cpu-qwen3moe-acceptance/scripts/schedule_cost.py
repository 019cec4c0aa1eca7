"""Host time of one round of expert-aware scheduling (integration/expert_schedule.py `schedule`:
expert prediction, node probabilities, the greedy of core/expert_aware_tree.py) by batch size and
budget, on synthetic rounds (the unit tests' router: token -> fixed experts in 3 layers; trees of
random draft log-probs; the target accepts along its argmax).

    OMP_NUM_THREADS=1 python docs/bench/cpu-qwen3moe-acceptance/scripts/schedule_cost.py
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests"))
import test_integration_expert_schedule as synth  # noqa: E402

import sglang_jetspec.integration.expert_schedule as es  # noqa: E402

torch.set_num_threads(1)
spent: dict[str, float] = {}


def timed(fn, key):
    def run(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t
    return run


es.schedule_batch = timed(es.schedule_batch, "greedy")
print(f"layers {synth.L}, experts {synth.E}, top-{synth.K}; ms per round, median of 6 rounds after 4 warm-up rounds")
print(f"{'batch':>5} {'budget':>6} {'schedule':>9} {'greedy':>8} {'probabilities':>14}")
for budget in (16, 32):
    for bs in (1, 4, 8, 32):
        sched = es.ExpertScheduler(synth.L, synth.E, synth.K, prune=True)
        sched.schedule = timed(sched.schedule, "schedule")
        sched.acceptance.trees_probs = timed(sched.acceptance.trees_probs, "probs")
        synth.rounds(sched, 4, bs=bs, budget=budget)
        rows = []
        for r in range(6):
            spent.clear()
            synth.rounds(sched, 1, bs=bs, budget=budget, seed=r + 1)
            rows.append(dict(spent))
        med = {k: 1e3 * statistics.median(row.get(k, 0.0) for row in rows) for k in ("schedule", "greedy", "probs")}
        print(f"{bs:>5} {budget:>6} {med['schedule']:>9.2f} {med['greedy']:>8.2f} {med['probs']:>14.2f}", flush=True)
