"""Settings of the conditional acceptance model (with the n-gram split) replayed on four traces:
the distinct experts interpolated at -3% accepted length (fixed expected-token bounds 1%..7%,
one device). Run from the repository root (the traces are in build/, see ../README.md):

    python docs/bench/cpu-qwen3moe-acceptance/scripts/model_variants.py [NAME ...]
"""
import sys, numpy as np, torch
from sglang_jetspec.bench.expert_replay import Round, load_trace, replay, with_ngram
from sglang_jetspec.core.conditional_acceptance import NGRAM_BINS, ConditionalAcceptance
from sglang_jetspec.core.pair_prior import PairPrior
COST = {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": None}
TR = [("build/s33/e64_trace_big.jsonl", 64, "qwen3moe-e64-jetspec"), ("build/s33/e64_trace_lp.jsonl", 64, "qwen3moe-e64-jetspec"),
      ("build/s32/e64_trace.jsonl", 64, "qwen3moe-e64-jetspec"), ("build/s33/tiny_trace_big.jsonl", 8, "qwen3moe-tiny-jetspec")]
VARS = {"base": {}, "depth2": {"depth_bins": 2}, "depth3": {"depth_bins": 3}, "rank4": {"rank_bins": 4}, "hl400": {"half_life": 400.0},
        "hl100": {"half_life": 100.0}, "ps1": {"prior_strength": 1.0}, "knots13": {"n_knots": 13}, "nolevels": {"depth_levels": False}}
names = sys.argv[1:] or list(VARS)
data = [(with_ngram(load_trace(t), PairPrior.load("models/" + h)), e) for t, e, h in TR]
for name in names:
    cells = []
    for rounds, E in data:
        m = ConditionalAcceptance(logp_bins=NGRAM_BINS, **VARS[name]); out = []
        for r in rounds:
            probs = [p.double() for p in m.trees_probs(r.trees, r.ngram)]
            m.update_from_trees(r.trees, r.paths, [t.n for t in r.trees], None, r.ngram)
            out.append(Round(r.trees, r.paths, r.routed, probs, r.predicted, r.logps, r.ngram))
        pts = []
        for b in (0.01, 0.02, 0.03, 0.04, 0.05, 0.07):
            row = replay(out, E, 1, COST, b)
            pts.append((row["accept_length_pruned"] / row["accept_length_full"] - 1, row["distinct_per_layer_pruned"] / row["distinct_per_layer_full"] - 1))
        a, e = np.array([p[0] for p in pts]), np.array([p[1] for p in pts]); o = np.argsort(a)
        cells.append(np.interp(-0.03, a[o], e[o]))
    print(f"{name:10s} " + "  ".join(f"{c:+.1%}" for c in cells) + f"   mean {np.mean(cells):+.2%}", flush=True)
