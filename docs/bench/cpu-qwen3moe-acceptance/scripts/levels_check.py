"""The conditional model with and without its per-depth levels on a trace: the replay's accepted
length and experts at two loss bounds, and predicted / true accepted draft nodes (rounds 21 on).

    python docs/bench/cpu-qwen3moe-acceptance/scripts/levels_check.py build/s32/e64_trace.jsonl 64
"""
import sys

from sglang_jetspec.bench import expert_replay as er
from sglang_jetspec.core.conditional_acceptance import ConditionalAcceptance

rounds, experts = er.load_trace(sys.argv[1]), int(sys.argv[2])
cost = {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": None}


def with_model(model):
    out = []
    for r in rounds:
        out.append(er.Round(r.trees, r.paths, r.routed, [p.double() for p in model.trees_probs(r.trees)], r.predicted))
        model.update_from_trees(r.trees, r.paths, [t.n for t in r.trees])
    return out


for bound in (0.03, 0.1):
    for name, model in (("no levels", ConditionalAcceptance(depth_levels=False)), ("levels", ConditionalAcceptance())):
        rr = with_model(model)
        row = er.replay(rr, experts, 1, cost, bound)
        pred = sum(float(p.sum()) for r in rr[20:] for p in r.probs)
        true = sum(len(p) - 1 for r in rounds[20:] for p in r.paths)
        print(f"bound {bound} {name:9s} accepted {row['accept_length_full']:.2f} -> {row['accept_length_pruned']:.2f}, "
              f"experts {row['distinct_per_layer_full']:.2f} -> {row['distinct_per_layer_pruned']:.2f}, "
              f"predicted / true accepted draft nodes {pred / true:.2f}")
