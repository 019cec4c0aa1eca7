"""Bigram/trigram counts of every regenerated answer (last two prompt tokens + answer), for sim_trees.py.

    python ngram_counts.py OUT.pkl   # from the repository root"""
import json, glob, sys, pickle
from collections import Counter
uni, bi, tri = Counter(), Counter(), Counter()
n = 0
for f in sorted(glob.glob("data/regen/smollm2/shard_*.jsonl") + glob.glob("data/regen/smollm2-cpu/shard_*.jsonl")):
    for line in open(f):
        d = json.loads(line)
        toks = d["prompt_ids"][-2:] + d["output_ids"]
        for i in range(2, len(toks)):
            uni[toks[i]] += 1; bi[(toks[i-1], toks[i])] += 1; tri[(toks[i-2], toks[i-1], toks[i])] += 1
        n += 1
print(n, sum(uni.values()), len(bi), len(tri))
pickle.dump((uni, bi, tri), open(sys.argv[1], "wb"))
