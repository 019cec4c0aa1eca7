"""The ceiling of tree construction for recorded rounds: a round whose tree held the target's own
continuation wherever it lies in the per-depth top-7 tables (an oracle ordering, any budget) would
accept 1 + the length of that chain. Also the argmax chain alone, and the ranks the chain used.
Usage: python oracle.py ROUNDS.jsonl[,MORE.jsonl] (files from collect.py; run from this folder)."""
import sys, numpy as np
from collections import defaultdict
from sim import rounds, chain
per = defaultdict(list); r0 = defaultdict(list); ranks_at = defaultdict(int)
for s, vals, ids, cont in (r for p in sys.argv[1].split(",") for r in rounds(p)):
    c = chain(ids, cont); per[s].append(1 + len(c))
    k = 0
    while k < len(c) and c[k] == 0: k += 1
    r0[s].append(1 + k)
    for x in c: ranks_at[x] += 1
for s in per: print(s, "oracle(top-7 chain)", np.mean(per[s]), "argmax chain", np.mean(r0[s]))
print(sorted(ranks_at.items()))
