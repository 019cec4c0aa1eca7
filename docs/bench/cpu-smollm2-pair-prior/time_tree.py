"""Host time of one tree, plain and with the shipped prior, on recorded drafts (first 10 prompts a set, every 5th position).

    python time_tree.py DRAFTS.pt   # from the repository root
"""
import sys, time, torch
from sglang_jetspec.core.pair_prior import PairPrior
from sglang_jetspec.core.tree import build_tree_from_top
t0 = time.perf_counter(); prior = PairPrior.load("models/smollm2-135m-jetspec").prepare(); print(f"load {time.perf_counter()-t0:.2f} s")
data = torch.load(sys.argv[1])
cases = []
for recs in data.values():
    for rec in recs[:10]:
        for i in range(0, rec["vals"].shape[0], 5):
            a = int(rec["seq"][rec["prompt_len"] + i]); p = int(rec["seq"][rec["prompt_len"] + i - 1])
            cases.append((a, p, rec["vals"][i].float(), rec["ids"][i].long()))
for budget in (8, 32, 64):
    t0 = time.perf_counter()
    for a, p, v, i in cases: build_tree_from_top(a, v[:, :7], i[:, :7], budget, 7)
    t1 = time.perf_counter()
    for a, p, v, i in cases: build_tree_from_top(a, v, i, budget, 7, prior=prior, prev_token=p)
    t2 = time.perf_counter()
    print(f"budget {budget}: plain {1e3*(t1-t0)/len(cases):.2f} ms, prior {1e3*(t2-t1)/len(cases):.2f} ms per tree ({len(cases)} trees)")
