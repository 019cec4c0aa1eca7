"""Run from the repository root (traces in build/, see ../README.md):

    python docs/bench/cpu-qwen3moe-acceptance/scripts/removal_greedy.py

Greedy REMOVAL (start from the whole trees, drop the leaf with the least expected tokens per
expert read it alone brings, until the expected-token floor) vs the scheduler's greedy addition,
same probabilities (conditional + n-gram split), same floors; real experts at -3% accepted."""
import sys, numpy as np, torch
from sglang_jetspec.bench.expert_replay import Round, load_trace, replay, with_ngram, with_acceptance, _loads
from sglang_jetspec.core.expert_aware_tree import _flatten, _incidence
from sglang_jetspec.core.loss_bound import committed
from sglang_jetspec.core.pair_prior import PairPrior
TR = [("build/s33/e64_trace_big.jsonl", 64, "qwen3moe-e64-jetspec"), ("build/s33/e64_trace_lp.jsonl", 64, "qwen3moe-e64-jetspec"),
      ("build/s32/e64_trace.jsonl", 64, "qwen3moe-e64-jetspec"), ("build/s33/tiny_trace_big.jsonl", 8, "qwen3moe-tiny-jetspec")]
COST = {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": None}

def removal(r, bound, E):
    b = _flatten(r.trees, [p.float().clamp(0, 1).double() for p in r.probs], r.predicted, None)
    inc = _incidence(b.experts, E).float()  # [N, LE]
    N = inc.shape[0]
    kept = torch.ones(N, dtype=torch.bool)
    parents = b.parents
    nkids = torch.zeros(N, dtype=torch.long).index_add_(0, parents.clamp_min(0)[parents >= 0], torch.ones(int((parents >= 0).sum()), dtype=torch.long))
    full = len(b.sizes) + float(b.probs.sum())
    floor = (1 - bound) * full
    expected = full
    counts = inc.sum(0)
    while True:
        leaf = kept & (nkids == 0) & (parents >= 0)
        if not bool(leaf.any()):
            break
        uniq = (inc * (counts == 1).float()[None]).sum(1)  # reads only this node brings
        ratio = torch.where(leaf, b.probs / (uniq + 1e-3), torch.full_like(b.probs, float("inf")))
        v = int(ratio.argmin())
        if expected - float(b.probs[v]) < floor:
            # try the next cheapest leaves that still fit
            order = torch.argsort(ratio)
            done = True
            for u in order.tolist():
                if not bool(leaf[u]): break
                if expected - float(b.probs[u]) >= floor and float(uniq[u]) > 0:
                    v, done = u, False; break
            if done: break
        kept[v] = False; expected -= float(b.probs[v]); counts -= inc[v]
        nkids[parents[v]] -= 1
    return [set(kept[o:o + n].nonzero().squeeze(1).tolist()) for o, n in zip(b.offsets, b.sizes)]

for t, E, h in TR:
    rounds = with_acceptance(with_ngram(load_trace(t), PairPrior.load("models/" + h)), "ngram")
    L = rounds[0].routed[0].shape[1]
    pts_add, pts_rem = [], []
    for bound in (0.01, 0.02, 0.03, 0.04, 0.05, 0.07):
        row = replay(rounds, E, 1, COST, bound)
        pts_add.append((row["accept_length_pruned"] / row["accept_length_full"] - 1, row["distinct_per_layer_pruned"] / row["distinct_per_layer_full"] - 1))
        ft = pt = fd = pd = 0.0
        for r in rounds:
            kept = removal(r, bound, E) if any(x.n > 1 for x in r.trees) else [set(range(x.n)) for x in r.trees]
            full = [set(range(x.n)) for x in r.trees]
            ft += sum(committed(p, f) for p, f in zip(r.paths, full)); pt += sum(committed(p, k) for p, k in zip(r.paths, kept))
            fd += _loads(r.routed, full, E, None, 1)[0]; pd += _loads(r.routed, kept, E, None, 1)[0]
        pts_rem.append((pt / ft - 1, pd / fd - 1))
    def at3(pts):
        a, e = np.array([p[0] for p in pts]), np.array([p[1] for p in pts]); o = np.argsort(a)
        return np.interp(-0.03, a[o], e[o])
    print(t, "addition:", " ".join(f"{a:+.1%}/{e:+.1%}" for a, e in pts_add), f"@-3%: {at3(pts_add):+.1%}")
    print(t, "removal: ", " ".join(f"{a:+.1%}/{e:+.1%}" for a, e in pts_rem), f"@-3%: {at3(pts_rem):+.1%}", flush=True)
