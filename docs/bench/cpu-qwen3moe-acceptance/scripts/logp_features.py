"""Does the node's OWN draft log-prob (before the n-gram prior's rescoring and cap) predict its
acceptance better, and does that let expert-aware pruning cut more experts at the same loss?
And the request's regime: its previous round's accepted length?

    python docs/bench/cpu-qwen3moe-acceptance/scripts/logp_features.py TRACE NUM_EXPERTS [BINS ...]

TRACE: an expert trace of a scheduling-OFF server recorded with each node's draft log-prob
(`draft_logprobs`, written since 2026-12-07). BINS: comma-separated thresholds, e.g. -0.1,-1,-3
(each a variant; none = the current model only). Each variant of core/conditional_acceptance.py
predicts every round before it learns from it (as in the server); printed: the log loss of the
labelled nodes (children of accepted nodes), predicted / true accepted nodes, and the exact
replay on one device at fixed expected-token bounds (accepted length / distinct experts per layer,
full trees -> pruned). Then the same on the trace's batch-1 rounds (one request in flight, so
consecutive rounds are mostly the same request) with the previous round's accepted length as
the split instead (bins at 2.5 and 5.5 tokens), and the oracle acceptance's bound there.
"""
import math
import sys

import torch

from sglang_jetspec.bench.expert_replay import Round, load_trace, replay, with_acceptance
from sglang_jetspec.core.calibration import _labelled_lists
from sglang_jetspec.core.conditional_acceptance import ConditionalAcceptance

COST = {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": None}  # launch.replay_experts' defaults
BOUNDS = (0.01, 0.03, 0.1)


def variant(rounds, bins):
    model = ConditionalAcceptance(logp_bins=bins)
    out, loss, n, pred, true = [], 0.0, 0, 0.0, 0
    for r in rounds:
        logps = r.logps if bins else None
        probs = [p.double() for p in model.trees_probs(r.trees, logps)]
        for t, path, p in zip(r.trees, r.paths, probs):
            if t.n == 1:
                continue
            idx, acc = _labelled_lists(t, path, t.n, None)
            on = set(path)
            full = [1.0] + p.tolist()
            for i, ok in zip(idx, acc):
                if int(t.parents[i]) in on:  # children of accepted nodes: q given the parent
                    q = min(max(full[i] / max(full[int(t.parents[i])], 1e-9), 1e-6), 1 - 1e-6)
                    loss -= math.log(q if ok else 1 - q)
                    n += 1
            pred += sum(p.tolist())
            true += len(path) - 1
        model.update_from_trees(r.trees, r.paths, [t.n for t in r.trees], None, logps)
        out.append(Round(r.trees, r.paths, r.routed, probs, r.predicted, r.logps))
    return out, loss / max(n, 1), pred / max(true, 1)


def table(rounds, experts, variants, name_of):
    print("| split | node log loss | predicted / true accepted | " +
          " | ".join(f"bound {b:.0%}: accept / experts" for b in BOUNDS) + " |")
    print("|---|---:|---:|" + "---:|" * len(BOUNDS))
    for bins in variants:
        rs, loss, ratio = variant(rounds, bins)
        print(f"| {name_of(bins)} | {loss:.4f} | {ratio:.2f} | " + " | ".join(_cells(rs, experts)) + " |")


def _cells(rs, experts):
    out = []
    for b in BOUNDS:
        row = replay(rs, experts, 1, COST, b)
        out.append(f"{100 * (row['accept_length_pruned'] / row['accept_length_full'] - 1):+.1f}% / "
                   f"{100 * (row['distinct_per_layer_pruned'] / row['distinct_per_layer_full'] - 1):+.1f}%")
    return out


def main():
    path, experts = sys.argv[1], int(sys.argv[2])
    variants = [()] + [tuple(float(x) for x in a.split(",")) for a in sys.argv[3:]]
    rounds = load_trace(path)
    if any(r.logps is None for r in rounds):
        raise SystemExit(f"{path}: rounds without draft_logprobs (record the trace with this version)")
    print(f"trace {path}: {len(rounds)} rounds; own draft log-prob bins")
    table(rounds, experts, variants, lambda b: ",".join(f"{x:g}" for x in b) or "none (current)")
    single, prev = [], 1
    for r in rounds:
        if len(r.trees) == 1:  # the previous round's accepted length stands in as every node's "log-prob"
            single.append(Round(r.trees, r.paths, r.routed, r.probs, r.predicted,
                                [torch.full((r.trees[0].n,), -float(prev))]))
            prev = len(r.paths[0])
    print(f"\n{len(single)} batch-1 rounds; previous round's accepted length bins")
    table(single, experts, [(), (-2.5, -5.5)],
          lambda b: " / ".join(f"{-x:g}" for x in b) + " tokens" if b else "none (current)")
    plain = [Round(r.trees, r.paths, r.routed, r.probs, r.predicted) for r in single]
    print("| oracle acceptance | - | 1.00 | " + " | ".join(_cells(with_acceptance(plain, "oracle"), experts)) + " |")

if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
