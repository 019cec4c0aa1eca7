"""Offline: does a calibrated node score (per depth / deviation) give longer accepted paths than
the draft's raw cumulative log-prob, at the same budget? Rounds recorded by collect.py."""
import sys, json, math, heapq
from collections import defaultdict
import numpy as np

def rounds(path):
    for line in open(path):
        r = json.loads(line)
        out, pos = r["out"], 0
        for (vals, ids), acc in zip(r["tables"], r["accepted"]):
            cont = out[pos + 1: pos + 1 + len(vals)]
            yield r["set"], vals, ids, cont
            pos += acc

def chain(ids, cont):
    ranks = []
    for d, row in enumerate(ids):
        if d >= len(cont) or cont[d] not in row: break
        ranks.append(row.index(cont[d]))
    return ranks

def observations(data):
    """(depth, rank, logp, dev, label) for every candidate whose parent is on the true path."""
    obs = []
    for _, vals, ids, cont in data:
        ranks = chain(ids, cont)
        for d in range(min(len(ranks) + 1, len(vals))):
            if d >= len(cont): break
            dev = int(any(r > 0 for r in ranks[:d]))
            for k in range(len(ids[d])):
                obs.append((d + 1, k, vals[d][k], dev, int(ids[d][k] == cont[d])))
    return np.array(obs, dtype=float)

def pav(y, w):
    y, w = list(y), list(w); blocks = [[y[i], w[i], 1] for i in range(len(y))]
    i = 0
    while i < len(blocks) - 1:
        if blocks[i][0] > blocks[i + 1][0]:
            a, b = blocks[i], blocks[i + 1]
            blocks[i] = [(a[0] * a[1] + b[0] * b[1]) / (a[1] + b[1]), a[1] + b[1], a[2] + b[2]]
            del blocks[i + 1]; i = max(i - 1, 0)
        else: i += 1
    out = []
    for v, _, n in blocks: out += [v] * n
    return out

EDGES = np.arange(-12, 0.01, 0.5)
def fit(obs, key, prior=4.0):
    """table[group][bin] = P(accept | parent accepted), isotonic in logp, Beta prior on exp(centre)."""
    tab = {}
    groups = defaultdict(list)
    for o in obs: groups[key(o)].append(o)
    for g, rows in groups.items():
        rows = np.array(rows)
        b = np.clip(np.digitize(rows[:, 2], EDGES), 0, len(EDGES))
        cent = np.concatenate([[EDGES[0] - 0.25], (EDGES[:-1] + EDGES[1:]) / 2, [0.0]])
        pos = np.bincount(b, rows[:, 4], len(EDGES) + 1); n = np.bincount(b, None, len(EDGES) + 1)
        p0 = np.exp(cent)
        est = (pos + prior * p0) / (n + prior)
        tab[g] = np.clip(pav(est, n + prior), 1e-6, 1)
    return tab

def scorer(tab, key):
    def g(d, k, lp, dev):
        t = tab.get(key((d, k, lp, dev, 0)))
        if t is None: return lp
        return math.log(t[int(np.clip(np.digitize(lp, EDGES), 0, len(EDGES)))])
    return g

def accept_len(vals, ids, cont, budget, g):
    W, R = len(ids[0]), len(vals)
    ranks = chain(ids, cont)
    # nodes: (score, depth, rank, parent_ranks tuple)
    heap = [(-g(1, 0, vals[0][0], 0), 0, (0,))]
    n, cnt, best = 1, 1, 0
    while heap and n < budget:
        s, _, path = heapq.heappop(heap); s = -s; n += 1
        d, k = len(path), path[-1]
        if list(path) == ranks[:d]: best = max(best, d)
        dev_parent = int(any(r > 0 for r in path[:-1]))
        if k + 1 < W:
            sib = path[:-1] + (k + 1,)
            heapq.heappush(heap, (-(s - g(d, k, vals[d-1][k], dev_parent) + g(d, k + 1, vals[d-1][k+1], dev_parent)), cnt, sib)); cnt += 1
        if d < R:
            dev = int(any(r > 0 for r in path))
            heapq.heappush(heap, (-(s + g(d + 1, 0, vals[d][0], dev)), cnt, path + (0,))); cnt += 1
    return 1 + best

if __name__ == "__main__":
    fit_data = [r for p in sys.argv[1].split(",") for r in rounds(p)]
    ev = [r for p in sys.argv[2].split(",") for r in rounds(p)]
    obs = observations(fit_data)
    print(len(fit_data), "fit rounds", len(obs), "observations;", len(ev), "eval rounds")
    # reliability: per depth, rank0 / rank>0, dev
    for d in range(1, 9):
        for dev in (0, 1):
            for r0 in (True, False):
                m = (obs[:, 0] == d) & (obs[:, 3] == dev) & ((obs[:, 1] == 0) == r0)
                if m.sum() < 20: continue
                print(f"d{d} dev{dev} {'r0 ' if r0 else 'r>0'} n={int(m.sum()):5d} mean q={np.exp(obs[m,2]).mean():.3f} acc={obs[m,4].mean():.3f}")
    keys = {
        "raw": None,
        "all": lambda o: 0,
        "depth": lambda o: min(int(o[0]), 8),
        "depth+dev": lambda o: (min(int(o[0]), 8), int(o[3])),
        "depth+dev+r0": lambda o: (min(int(o[0]), 8), int(o[3]), int(o[1] == 0)),
        "dev+r0": lambda o: (int(o[3]), int(o[1] == 0)),
    }
    for budget in (8, 16, 32, 64):
        line = [f"B={budget}"]
        for name, key in keys.items():
            g = (lambda d, k, lp, dev: lp) if key is None else scorer(fit(obs, key), key)
            per = defaultdict(list)
            for s, vals, ids, cont in ev:
                per[s].append(accept_len(vals, ids, cont, budget, g))
            line.append(name + " " + " ".join(f"{s}:{np.mean(v):.3f}" for s, v in per.items()))
        print(" | ".join(line), flush=True)
