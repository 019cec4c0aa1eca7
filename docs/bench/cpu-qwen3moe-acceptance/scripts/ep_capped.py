"""EP prototype: capped greedy. Visit nodes by descending P(accepted) (a node only after its parent);
keep a node if no (layer, rank) load would exceed the cap m; the smallest m whose kept value reaches
(1 - bound) of the candidates' is used. Replayed at a 3% held loss against the current greedy.

    python docs/bench/cpu-qwen3moe-acceptance/scripts/ep_capped.py TRACE EPS

Run from the repository root (the 64-expert head's prior is read from models/).
"""
import sys
import torch
import sglang_jetspec.bench.expert_replay as er
from sglang_jetspec.core import expert_load as el
from sglang_jetspec.core.loss_bound import LossBound, committed
from sglang_jetspec.core.pair_prior import PairPrior
from sglang_jetspec.integration.expert_schedule import PROBE_EVERY

trace = sys.argv[1]
eps = [int(x) for x in sys.argv[2].split(",")]
E = 64
base = er.with_acceptance(er.with_ngram(er.load_trace(trace), PairPrior.load("models/qwen3moe-e64-jetspec")), "ngram")


def capped(trees, probs, experts, ep, bound):
    """Kept node index lists (root included) per tree."""
    R = ep
    per = E // R
    nodes = []  # (prob, b, v)
    for b, (t, p) in enumerate(zip(trees, probs)):
        for v in range(1, t.n):
            nodes.append((float(p[v - 1]), b, v))
    nodes.sort(key=lambda x: -x[0])
    total = sum(x[0] for x in nodes)
    L = experts[0].shape[1]
    root_sets = [[set() for _ in range(L)] for _ in range(R)]
    # roots always verified: their experts are paid anyway
    used0 = [set() for _ in range(L)]
    for b, t in enumerate(trees):
        for l in range(L):
            used0[l].update(experts[b][0, l].tolist())
    def run(m):
        used = [set(s) for s in used0]
        load = [[0] * R for _ in range(L)]
        for l in range(L):
            for e in used[l]:
                load[l][e // per] += 1
        keep = [{0} for _ in trees]
        val = 0.0
        for p, b, v in nodes:
            par = int(trees[b].parents[v])
            if par not in keep[b]:
                continue
            new = [[e for e in set(experts[b][v, l].tolist()) if e not in used[l]] for l in range(L)]
            ok = True
            for l in range(L):
                add = [0] * R
                for e in new[l]:
                    add[e // per] += 1
                if any(load[l][r] + add[r] > m for r in range(R) if add[r]):
                    ok = False
                    break
            if not ok:
                continue
            for l in range(L):
                for e in new[l]:
                    used[l].add(e)
                    load[l][e // per] += 1
            keep[b].add(v)
            val += p
        return keep, val
    for m in range(1, per + 1):
        keep, val = run(m)
        if val >= (1 - bound) * total - 1e-12:
            return keep
    return [set(range(t.n)) for t in trees]


for ep in eps:
    e2r = el.contiguous_expert_to_rank(E, ep)
    for how in ("greedy", "capped"):
        held = LossBound(0.03, PROBE_EVERY)
        k = {"a": 1e-3, "b": 2e-6, "c": 0.0, "d": 1e-4}
        tot = [0, 0, 0.0, 0.0, 0.0, 0.0, 0]
        for r in base:
            probs = [p.float().clamp(0, 1).double() for p in r.probs]
            if how == "greedy":
                s = er.schedule_batch(r.trees, probs, r.predicted, k, expert_to_rank=e2r, max_expected_loss=held.bound)
                kept = [set(x.tolist()) for x in s.kept]
            else:
                kept = capped(r.trees, probs, r.predicted, ep, held.bound)
            full = [set(range(t.n)) for t in r.trees]
            if any(t.n > 1 for t in r.trees):
                if held.next_is_probe():
                    kept = full
                else:
                    held.observe(*er._labelled_loss(r, kept), estimated=True)
            fd, fm = er._loads(r.routed, full, E, e2r, ep)
            pd, pm = er._loads(r.routed, kept, E, e2r, ep)
            tot[0] += sum(committed(p, f) for p, f in zip(r.paths, full))
            tot[1] += sum(committed(p, kk) for p, kk in zip(r.paths, kept))
            tot[2] += fd; tot[3] += pd; tot[4] += fm; tot[5] += pm; tot[6] += len(r.trees)
        print(f"ep {ep} {how}: accept {100*(tot[1]/tot[0]-1):+.1f}%, distinct {100*(tot[3]/tot[2]-1):+.1f}%, "
              f"max rank {100*(tot[5]/tot[4]-1):+.1f}%, bound {held.bound:.3f}", flush=True)
