"""Score tree-building rules exactly on the anchors of tree_scoring_collect.py: mean accepted
length (bonus included) of best-first trees ranked by the head's own cumulative log-prob against
trees ranked by a calibrated step probability P(token accepted | parent accepted), fitted per
bucket of "deviations from the top-1 trunk so far" (0 / 1 / 2+) and isotonic in the draft
log-prob, 2-fold cross-validated over the anchors. Also the ceiling of an unbounded top-W tree.

    python docs/bench/cpu-smollm2-probes/tree_scoring_offline.py ANCHORS.pt
"""
import heapq
import math
import sys

import numpy as np
import torch

from sglang_jetspec.core.isotonic import isotonic  # the calibrator's pool-adjacent-violators fit

data = torch.load(sys.argv[1])
V, I, T = data["vals"].numpy(), data["ids"].numpy(), data["truth"].numpy()
N, DEPTH, W = V.shape
BUCKETS = 3
EDGES = np.array([-6, -4, -3, -2.5, -2, -1.5, -1.2, -1, -0.75, -0.5, -0.3, -0.15, 0.01])


def step_rows(anchors):
    """(deviation bucket, draft log-prob, accepted) of every candidate whose parent is accepted."""
    rows = []
    for n in anchors:
        devs = 0
        for d in range(DEPTH):
            t, ids = T[n, d], I[n, d].tolist()
            if t < 0:
                break
            rows += [(min(devs, BUCKETS - 1), V[n, d, r], float(ids[r] == t)) for r in range(W)]
            if t not in ids:
                break
            devs += ids.index(t) > 0
    return np.array(rows)


def fit(rows, prior=20.0):
    """Per deviation bucket: binned acceptance rate with a Beta prior at exp(bin centre), isotonic."""
    centres = np.exp((EDGES[:-1] + EDGES[1:]) / 2)
    tables = []
    for b in range(BUCKETS):
        q, y = rows[rows[:, 0] == b, 1], rows[rows[:, 0] == b, 2]
        k = np.clip(np.searchsorted(EDGES, q, side="right") - 1, 0, len(centres) - 1)
        s, c = np.bincount(k, y, len(centres)), np.bincount(k, None, len(centres))
        tables.append(np.clip(np.array(isotonic((s + prior * centres) / (c + prior), c + prior)), 1e-6, 1.0))
    return tables


def step_score(tables, devs, q):
    if tables is None:
        return q  # the head's own log-prob (what core/tree.py uses)
    k = min(max(int(np.searchsorted(EDGES, q, side="right") - 1), 0), len(EDGES) - 2)
    return math.log(tables[min(devs, BUCKETS - 1)][k])


def accepted(n, budget, tables):
    """Best-first tree (lazy siblings, as core/tree.py) under `tables`; tokens committed."""
    toks, par, devs, score = [-1], [-1], [0], [0.0]
    heap, counter = [], 0

    def push(p, d, r):
        nonlocal counter
        heapq.heappush(heap, (-(score[p] + step_score(tables, devs[p], V[n, d - 1, r])), counter, p, d, r))
        counter += 1

    push(0, 1, 0)
    while heap and len(toks) < budget:
        s, _, p, d, r = heapq.heappop(heap)
        toks.append(I[n, d - 1, r]), par.append(p), devs.append(devs[p] + (r > 0)), score.append(-s)
        if r + 1 < W:
            push(p, d, r + 1)
        if d < DEPTH:
            push(len(toks) - 1, d + 1, 0)
    kids = {}
    for i in range(1, len(toks)):
        kids.setdefault(par[i], {})[toks[i]] = i
    node, length = 0, 1
    for d in range(DEPTH):
        if T[n, d] < 0 or T[n, d] not in kids.get(node, {}):
            break
        node, length = kids[node][T[n, d]], length + 1
    return length


print(f"{N} anchors")
halves = (np.arange(N // 2), np.arange(N // 2, N))
fitted = [fit(step_rows(halves[1 - h])) for h in (0, 1)]  # half h is scored with the other half's fit
for budget in (8, 16, 32, 64):
    raw = np.mean([accepted(n, budget, None) for n in range(N)])
    cv = [accepted(n, budget, fitted[h]) for h in (0, 1) for n in halves[h]]
    print(f"budget {budget}: head's log-prob {raw:.3f}, calibrated step probability {np.mean(cv):.3f} "
          f"({np.mean(cv) / raw - 1:+.1%})")
for w in (1, 2, 3, W):
    lengths = []
    for n in range(N):
        length = 1
        for d in range(DEPTH):
            if T[n, d] < 0 or T[n, d] not in I[n, d, :w].tolist():
                break
            length += 1
        lengths.append(length)
    print(f"ceiling, every top-{w} path (no budget): {np.mean(lengths):.3f}")
