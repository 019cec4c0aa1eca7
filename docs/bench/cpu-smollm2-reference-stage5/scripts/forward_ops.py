"""Probe: one decode step vs one 6-node tree verify (median ms), then torch.profiler op tables of
both (aten::mm is the difference). Usage: OMP_NUM_THREADS=2 python docs/bench/cpu-smollm2-reference-stage5/scripts/forward_ops.py"""
import time, torch, statistics
from torch.profiler import profile, ProfilerActivity
from sglang_jetspec.reference.runner import resolve_model, load_head_arg
from sglang_jetspec.reference.target import HFTarget, keep_cache_rows
from sglang_jetspec.core.tree import build_tree
torch.set_num_threads(2)
t = HFTarget(resolve_model(None))
ids = list(range(100, 300))
cache = t.new_cache()
t.forward(torch.tensor(ids), cache, 0, logits=False)
n = len(ids)
lp = torch.log_softmax(torch.randn(15, 49152), -1)
tree = build_tree(5, lp, 6, 7)
mask, depths = tree.ancestor_mask(), tree.depths
def dec():
    t.forward(torch.tensor([7]), cache, n, logits=False); keep_cache_rows(cache, n, torch.tensor([], dtype=torch.long))
def ver():
    t.forward(tree.tokens, cache, n, layer_ids=[1, 27], tree_mask=mask, depths=depths, logits=False); keep_cache_rows(cache, n, torch.tensor([], dtype=torch.long))
def causal6():
    t.forward(tree.tokens, cache, n, logits=False); keep_cache_rows(cache, n, torch.tensor([], dtype=torch.long))
for name, fn in (("decode", dec), ("tree6", ver), ("causal6", causal6)):
    fn(); ts = []
    for _ in range(15):
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
    print(name, round(statistics.median(ts), 1))
for name, fn in (("decode", dec), ("tree6", ver)):
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(5): fn()
    print(name); print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
