"""Does the n-gram prior's own probability of a node (the target's answers' smoothed
P(token | grandparent, parent), core/pair_prior.PairPrior.log_prob, uncapped) predict its
acceptance better than the sibling rank and capped score step alone, and does that let
expert-aware pruning cut more experts at the same accepted length?

    python docs/bench/cpu-qwen3moe-acceptance/scripts/ngram_split.py TRACE NUM_EXPERTS HEAD

TRACE: an expert trace of a scheduling-OFF server; HEAD: the head folder with the prior the trace
was drafted with. The trace does not hold the token before each anchor, so depth-1 nodes use the
bigram (the server uses the trigram there). Each variant of core/conditional_acceptance.py predicts
every round before it learns from it (as in the server); printed: the node log loss (children of
accepted nodes), predicted / true accepted nodes, the exact one-device replay at fixed
expected-token bounds 0.5%..10% (accepted length / distinct experts per layer, full -> pruned),
and the distinct experts interpolated at -3% accepted length.
"""
import sys

import numpy as np
import torch
from logp_features import COST, variant

from sglang_jetspec.bench.expert_replay import load_trace, replay, with_ngram
from sglang_jetspec.core.pair_prior import PairPrior

SPLITS = ((), (-0.1, -1, -3), (-0.2, -1, -3), (-0.1, -0.5, -1.5, -3), (-0.05, -0.5))
BOUNDS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1)


def main():
    trace, experts, head = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rounds = load_trace(trace)
    ng = with_ngram(rounds, PairPrior.load(head))
    for r in ng:  # the study's variant() feeds Round.logps to the model
        r.logps = r.ngram
    print(f"trace {trace}: {len(rounds)} rounds, {experts} experts; prior of {head}")
    print("| split (n-gram log-prob thresholds) | node log loss | predicted / true accepted | "
          + " | ".join(f"{b:.1%}" for b in BOUNDS) + " | experts at -3% accepted |")
    print("|---|---:|---:|" + "---:|" * (len(BOUNDS) + 1))
    for bins in SPLITS:
        rs, loss, ratio = variant(ng if bins else rounds, bins)
        pts = []
        for b in BOUNDS:
            row = replay(rs, experts, 1, COST, b)
            pts.append((row["accept_length_pruned"] / row["accept_length_full"] - 1,
                        row["distinct_per_layer_pruned"] / row["distinct_per_layer_full"] - 1))
        a, e = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        o = np.argsort(a)
        name = ",".join(f"{x:g}" for x in bins) or "none (before)"
        print(f"| {name} | {loss:.4f} | {ratio:.2f} | " + " | ".join(f"{x:+.1%} / {y:+.1%}" for x, y in pts)
              + f" | {np.interp(-0.03, a[o], e[o]):+.1%} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
