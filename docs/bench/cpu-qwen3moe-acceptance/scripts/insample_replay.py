"""The conditional model fitted on ALL of a trace's rounds first (no forgetting, almost no prior),
then replayed: the best node probabilities its features (sibling rank, score step, depth levels)
can give, against the online model of the server.

    python docs/bench/cpu-qwen3moe-acceptance/scripts/insample_replay.py build/s32/e64_trace.jsonl 64
"""
import sys

from sglang_jetspec.bench import expert_replay as er
from sglang_jetspec.core.conditional_acceptance import ConditionalAcceptance

rounds = er.load_trace(sys.argv[1])
experts = int(sys.argv[2])
cost = {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": None}
model = ConditionalAcceptance(half_life=None, prior_strength=0.05)
for r in rounds:
    model.update_from_trees(r.trees, r.paths, [t.n for t in r.trees])
fitted = [er.Round(r.trees, r.paths, r.routed, [p.double() for p in model.trees_probs(r.trees)], r.predicted)
          for r in rounds]
for bound in (0.03, 0.1):
    row = er.replay(fitted, experts, 1, cost, bound)
    print(f"in-sample, bound {bound}: accepted length {row['accept_length_full']:.2f} -> "
          f"{row['accept_length_pruned']:.2f}, distinct experts / layer {row['distinct_per_layer_full']:.2f} -> "
          f"{row['distinct_per_layer_pruned']:.2f}")
