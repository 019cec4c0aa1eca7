"""Shared parts of sim_trees.py (n-gram tables, the accept walk) and its first, bigram-only grid."""
import heapq, math, pickle, sys, torch

def load_pmi(path, beta):
    uni, bi, tri = pickle.load(open(path, "rb"))
    N = sum(uni.values()); V = 49152
    puni = {t: (c + 1) / (N + V) for t, c in uni.items()}
    ctx = {}
    for (p, t), c in bi.items():
        ctx[p] = ctx.get(p, 0) + c
    return uni, bi, tri, N, V, puni, ctx

class Scorer:
    def __init__(self, ng, beta, lam, lam1, clip):
        self.uni, self.bi, self.tri, self.N, self.V, self.puni, self.ctx = ng
        self.beta, self.lam, self.lam1, self.clip = beta, lam, lam1, clip
    def pmi(self, p, t):
        cp = self.ctx.get(p)
        if not cp:
            return 0.0
        pu = self.puni.get(t, 1 / (self.N + self.V))
        c = self.bi.get((p, t), 0)
        v = math.log((c / pu + self.beta) / (cp + self.beta))
        return max(-self.clip, v)

def best_first(anchor, budget, dmax, children):
    """The best-first heap walk both simulators use. children(node, toks, parents, depths) -> the
    node's children as [(score increment, token)], best first."""
    toks, parents, depths, scores = [anchor], [-1], [0], [0.0]
    cand, heap, cnt = {}, [], 0
    if budget > 1 and dmax >= 1:
        cand[0] = children(0, toks, parents, depths); heapq.heappush(heap, (-cand[0][0][0], cnt, 0, 0)); cnt += 1
    while heap and len(toks) < budget:
        _, _, par, r = heapq.heappop(heap)
        v, t = cand[par][r]; node = len(toks)
        toks.append(t); parents.append(par); depths.append(depths[par] + 1); scores.append(scores[par] + v)
        if r + 1 < len(cand[par]):
            heapq.heappush(heap, (-(scores[par] + cand[par][r + 1][0]), cnt, par, r + 1)); cnt += 1
        if depths[node] < dmax:
            cand[node] = children(node, toks, parents, depths)
            heapq.heappush(heap, (-(scores[node] + cand[node][0][0]), cnt, node, 0)); cnt += 1
    return toks, parents

def build(anchor, vals, ids, budget, width, depth_max, scorer, pool):
    """Best-first tree; children lists depend on the parent's token when scorer is given."""
    def child_list(node, toks, parents, depths):
        d = depths[node] + 1
        if scorer is None:
            return list(zip(vals[d - 1][:width], ids[d - 1][:width]))
        lam = scorer.lam1 if d == 1 else scorer.lam
        p = toks[node]
        lst = [(v + lam * scorer.pmi(p, t), t) for v, t in zip(vals[d - 1][:pool], ids[d - 1][:pool])]
        lst.sort(key=lambda x: -x[0])
        return lst[:width]
    return best_first(anchor, budget, depth_max, child_list)

def accept(toks, parents, truth):
    kids = {}
    for i in range(1, len(toks)):
        kids.setdefault(parents[i], {})[toks[i]] = i
    node, k = 0, 0
    while k < len(truth) and node in kids and truth[k] in kids[node]:
        node = kids[node][truth[k]]; k += 1
    return k

def simulate(rec, budget, width, scorer, pool):
    seq, pl = rec["seq"].tolist(), rec["prompt_len"]
    vals, ids = rec["vals"].float().tolist(), rec["ids"].tolist()
    ans = seq[pl:]
    n = len(ans)
    i, rounds = 0, 0
    while i < n - 1:
        remaining = n - 1 - i
        dmax = min(15, remaining, budget - 1)
        truth = ans[i + 1:i + 1 + dmax]
        toks, parents = build(ans[i], vals[i], ids[i], budget, width, dmax, scorer, pool)
        k = accept(toks, parents, truth)
        i += k + 1; rounds += 1
    return n - 1, rounds

if __name__ == "__main__":
    data = torch.load(sys.argv[1])
    ng = load_pmi(sys.argv[2], 0)
    configs = [("base", None, 7)]
    for beta in (2.0, 10.0):
        for lam in (0.3, 0.6, 1.0):
            for pool in (7, 16):
                configs.append((f"b{beta} l{lam} pool{pool}", Scorer(ng, beta, lam, 0.0, 8.0), pool))
    for budget in (8, 32, 64):
        for name, sc, pool in configs:
            row = []
            for setname, recs in data.items():
                tok = rd = 0
                for rec in recs:
                    a, b = simulate(rec, budget, 7, sc, pool); tok += a; rd += b
                row.append(f"{setname} {tok / rd:.3f}")
            print(f"budget {budget:3d} {name:22s}", "  ".join(row), flush=True)
