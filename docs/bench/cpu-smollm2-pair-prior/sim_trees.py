"""Offline tree simulation used to choose the n-gram prior's settings (see report.md).

    python sim_trees.py DRAFTS.pt "[dict(lam=0.5, lam3=0.5, beta3=2.0, cap=True, pool=32)]" "[8,32,64]" 10:40 NGRAMS.pkl

Greedy decoding along the target's own answers: each round builds a tree from the recorded
draft tables (plain, or rescored by bigram pmi `lam`, trigram-over-bigram pmi `lam3`, a context
bigram bonus `gam`, `cap` = min(0, .)), accepts the longest path matching the answer, and jumps
by accepted + 1. Prints mean accepted length per set for records [lo:hi] of each set."""
import math, sys, torch
from collections import Counter
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sim_common import load_pmi, accept, best_first

class S3:
    def __init__(self, ng, tri2, beta=10.0, lam=0.3, lam1=None, lam3=0.0, beta3=10.0, gam=0.0, clip=8.0, cap=False):
        self.uni, self.bi, self.tri, self.N, self.V, self.puni, self.ctx = ng
        self.ctx2 = tri2
        self.beta, self.lam, self.lam1, self.lam3, self.beta3, self.gam, self.clip, self.cap = beta, lam, lam if lam1 is None else lam1, lam3, beta3, gam, clip, cap
        self.cbi = Counter()
    def pbi(self, p, t):
        pu = self.puni.get(t, 1 / (self.N + self.V)); cp = self.ctx.get(p, 0)
        return pu, (self.bi.get((p, t), 0) + self.beta * pu) / (cp + self.beta), cp
    def bonus(self, d, g, p, t):
        pu, pb, cp = self.pbi(p, t)
        b = (self.lam1 if d == 1 else self.lam) * max(-self.clip, math.log(pb / pu)) if cp else 0.0
        if self.lam3 and g is not None:
            cgp = self.ctx2.get((g, p), 0)
            if cgp:
                pt = (self.tri.get((g, p, t), 0) + self.beta3 * pb) / (cgp + self.beta3)
                b += self.lam3 * max(-self.clip, math.log(pt / pb))
        if self.gam:
            c = self.cbi.get((p, t), 0)
            if c:
                b += self.gam * math.log1p(c)
        return b

def build3(prev, anchor, vals, ids, budget, width, dmax, sc, pool):
    def child_list(node, toks, parents, depths):
        d = depths[node] + 1; p = toks[node]
        g = toks[parents[node]] if node else prev
        if sc is None:
            lst = list(zip(vals[d - 1][:width], ids[d - 1][:width]))
        else:
            lst = [(v + sc.bonus(d, g, p, t), t) for v, t in zip(vals[d - 1][:pool], ids[d - 1][:pool])]
            if sc.cap == "norm":
                raw = vals[d - 1][:pool]
                m0 = max(raw); z0 = m0 + math.log(sum(math.exp(x - m0) for x in raw))
                m1 = max(v for v, _ in lst); z1 = m1 + math.log(sum(math.exp(v - m1) for v, _ in lst))
                lst = [(v - z1 + z0, t) for v, t in lst]
            elif sc.cap:
                lst = [(min(v, 0.0), t) for v, t in lst]
            lst.sort(key=lambda x: -x[0])
        return lst[:width]
    return best_first(anchor, budget, dmax, child_list)

def simulate(rec, budget, width, sc, pool):
    seq, pl = rec["seq"].tolist(), rec["prompt_len"]
    vals, ids = rec["vals"].float().tolist(), rec["ids"].tolist()
    ans = seq[pl:]; n = len(ans); i = rounds = 0
    while i < n - 1:
        dmax = min(15, n - 1 - i, budget - 1)
        if sc is not None and sc.gam:
            ctx = seq[:pl + i + 1]; sc.cbi = Counter(zip(ctx[:-1], ctx[1:]))
        toks, parents = build3(seq[pl + i - 1], ans[i], vals[i], ids[i], budget, width, dmax, sc, pool)
        k = accept(toks, parents, ans[i + 1:i + 1 + dmax]); i += k + 1; rounds += 1
    return n - 1, rounds

if __name__ == "__main__":
    data = torch.load(sys.argv[1]); lo, hi = map(int, sys.argv[4].split(":"))
    ng = load_pmi(sys.argv[5], 0)
    tri2 = Counter()
    for (g, p, t), c in ng[2].items():
        tri2[(g, p)] += c
    grid = [("base", None, 7, 7)]
    for kw in eval(sys.argv[2]):
        grid.append((str(kw), S3(ng, tri2, **{k: v for k, v in kw.items() if k not in ("pool", "width")}), kw.get("pool", 16), kw.get("width", 7)))
    for budget in eval(sys.argv[3]):
        for name, sc, pool, width in grid:
            cells = []
            for setname, recs in data.items():
                tok = rd = 0
                for rec in recs[lo:hi]:
                    a, b = simulate(rec, budget, width, sc, pool); tok += a; rd += b
                cells.append(f"{setname} {tok / rd:.3f}")
            print(f"@{budget:3d} {name:62s}", "  ".join(cells), flush=True)
