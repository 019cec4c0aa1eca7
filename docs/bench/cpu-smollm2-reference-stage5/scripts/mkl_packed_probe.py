"""Probe: tree-verify forward time (ms, median of 15) with every nn.Linear of the target replaced by
MKL's packed-weight linear (weights reordered for HINT rows; one row keeps F.linear).
Usage: OMP_NUM_THREADS=2 python docs/bench/cpu-smollm2-reference-stage5/scripts/mkl_packed_probe.py 8
Output of 2026-12-02 (Intel Xeon VM, 2 threads), budget -> ms:
plain {decode 28.5, 6: 46.4, 8: 50.1, 12: 55.3, 16: 60.9}
mkl packed hint 8 {decode 30.3, 6: 48.4, 8: 44.5, 12: 59.2, 16: 63.5}"""
import time, torch, statistics, sys
import torch.nn.functional as F
from sglang_jetspec.reference.runner import resolve_model
from sglang_jetspec.reference.target import HFTarget, keep_cache_rows
from sglang_jetspec.core.tree import build_tree
torch.set_num_threads(2)
t = HFTarget(resolve_model(None))
ids = list(range(100, 300))
cache = t.new_cache()
t.forward(torch.tensor(ids), cache, 0, logits=False)
n = len(ids)
lp = torch.log_softmax(torch.randn(15, 49152), -1)
def bench(fn):
    fn(); ts = []
    for _ in range(15):
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(ts), 1)
def run(label):
    res = {}
    res["decode"] = bench(lambda: (t.forward(torch.tensor([7]), cache, n, logits=False), keep_cache_rows(cache, n, torch.tensor([], dtype=torch.long))))
    for b in (6, 8, 12, 16):
        tree = build_tree(5, lp, b, 7); mask = tree.ancestor_mask()
        res[b] = bench(lambda: (t.forward(tree.tokens, cache, n, layer_ids=[1, 27], tree_mask=mask, depths=tree.depths, logits=False), keep_cache_rows(cache, n, torch.tensor([], dtype=torch.long))))
    print(label, res, flush=True)
run("plain")
hint = int(sys.argv[1])
lins = [m for m in t.model.model.modules() if isinstance(m, torch.nn.Linear)]
for m in lins:
    m._packed = torch.ops.mkl._mkl_reorder_linear_weight(m.weight, hint)
    def fwd(x, m=m):
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] == 1:
            return F.linear(x, m.weight, m.bias)
        return torch.ops.mkl._mkl_linear(rows.contiguous(), m._packed, m.weight, m.bias, hint).view(*x.shape[:-1], -1)
    m.forward = fwd
run(f"mkl packed hint {hint}")
