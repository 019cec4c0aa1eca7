"""Host time of ExpertScheduler.observe (integration/expert_schedule.py) per round, with an n-gram
prior, on the unit tests' synthetic rounds (3 layers, 32 experts, top-2), with and without bonus
tokens labelling the rounds; median of the rounds after 4. Run from the repository root:

    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/bench/cpu-qwen3moe-acceptance/scripts/observe_cost.py
"""
import statistics, sys, time, torch
sys.path.insert(0, "tests")
import test_integration_expert_schedule as synth
import sglang_jetspec.integration.expert_schedule as es
from sglang_jetspec.core.pair_prior import PairPrior
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
prior = PairPrior.from_sequences([torch.randint(0, synth.VOCAB, (2000,), generator=g).tolist() for _ in range(4)], synth.VOCAB)
for budget in (32,):
    for bs in (1, 8, 32):
        for labels in (False, True):
            sched = es.ExpertScheduler(synth.L, synth.E, synth.K, prune=True, hold_loss=0.03, prior=prior)
            times = []
            orig = sched.observe
            def obs(*a, **k):
                t = time.perf_counter(); r = orig(*a, **k); times.append(time.perf_counter() - t); return r
            sched.observe = obs
            synth.rounds(sched, 10, bs=bs, budget=budget, labels=labels)
            print(f"bs {bs:3d} budget {budget} labels {labels!s:5}: observe {1e3 * statistics.median(times[4:]):.2f} ms")
