"""Prototype: scale each tree's node probabilities by its slot's recent ratio of accepted tokens to
predicted expected tokens (EMA, half-life h rounds), replayed at a 3% held loss.

    python docs/bench/cpu-qwen3moe-acceptance/scripts/request_ratio.py TRACE HALF_LIVES mult|pow [EPS]

Run from the repository root (the 64-expert head's prior is read from models/).
"""
import sys, math
import torch
import sglang_jetspec.bench.expert_replay as er
from sglang_jetspec.core.pair_prior import PairPrior
from sglang_jetspec.integration.expert_schedule import PROBE_EVERY

trace = sys.argv[1]
hs = [float(x) for x in sys.argv[2].split(",")]
mode = sys.argv[3] if len(sys.argv) > 3 else "mult"
eps = [int(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "1").split(",")]
base = er.with_acceptance(er.with_ngram(er.load_trace(trace), PairPrior.load("models/qwen3moe-e64-jetspec")), "ngram")

def adjust(tree, p, ratio):
    if tree.n == 1:
        return p
    par = tree.parents.tolist()
    out = [1.0] + (p.double() * (ratio if mode == "mult" else 1.0)).tolist()
    if mode == "pow":  # P -> P ** (1 / ratio): ratio > 1 lifts every node, deep ones most in absolute terms
        out = [1.0] + [min(1.0, max(1e-12, x)) ** (1.0 / ratio) for x in p.double().tolist()]
    kids = tree.children()
    res = [1.0] * tree.n
    for v in range(tree.n):
        ks = kids[v]
        if not ks:
            continue
        vals = [min(res[v], out[k]) for k in ks]
        tot = sum(vals)
        sc = res[v] / tot if tot > res[v] else 1.0
        for k, x in zip(ks, vals):
            res[k] = x * sc
    return torch.tensor(res[1:], dtype=torch.float64)

for h in hs:
    if h == 0:
        rounds = base
    else:
        d = 0.5 ** (1.0 / h)
        acc, pred = {}, {}
        rounds = []
        for r in base:
            probs = []
            for i, (t, p, path) in enumerate(zip(r.trees, r.probs, r.paths)):
                a, q = acc.get(i, 0.0), pred.get(i, 0.0)
                ratio = (a + 2.0) / (q + 2.0)
                probs.append(adjust(t, p, ratio) if t.n > 1 else p)
                if t.n > 1:
                    acc[i] = a * d + (len(path) - 1)
                    pred[i] = q * d + float(p.double().sum())
            rounds.append(er.Round(r.trees, r.paths, r.routed, probs, r.predicted, r.logps, r.ngram))
    for ep in eps:
        for name, rs in (("all", rounds), ("math", rounds[:166]), ("code", rounds[166:])):
            row = er.replay(rs, 64, ep, {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": None}, None, False, "recorded",
                            {"target": 0.03, "probe_every": PROBE_EVERY}, labels=True)
            row["acceptance"] = f"ngram, {name}, slot ratio h={h} {mode}"
            print(er.markdown([row]).splitlines()[-1], flush=True)
