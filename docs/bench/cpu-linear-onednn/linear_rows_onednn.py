"""Probe: PyTorch's CPU F.linear against the packed oneDNN product of core/packed_linear.py, fp32, at
the decoder-layer shapes of SmolLM2-135M (one q-, one k/v-, one gate- and one down-projection shape
per layer, 30 layers of distinct random weights), by row count; median ms of 11 passes over all 120.
Usage: python docs/bench/cpu-linear-onednn/linear_rows_onednn.py THREADS
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from sglang_jetspec.core.packed_linear import PackedWeight, packed_linear

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.set_grad_enabled(False)
shapes = {"q": (576, 576), "kv": (192, 576), "gate": (1536, 576), "down": (576, 1536)}
gen = torch.Generator().manual_seed(0)
weights = [torch.randn(*s, generator=gen) for s in shapes.values() for _ in range(30)]
packed = [PackedWeight(w) for w in weights]


def median_ms(fn, reps=11):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


print(f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
print("rows  F.linear_ms  onednn_ms")
for m in (1, 2, 4, 6, 8, 12, 16, 32):
    xs = [torch.randn(m, w.shape[1], generator=gen) for w in weights]
    a = median_ms(lambda: [F.linear(x, w) for x, w in zip(xs, weights)])
    b = median_ms(lambda: [packed_linear(x, p) for x, p in zip(xs, packed)])
    print(f"{m:4d}  {a:11.1f}  {b:9.1f}", flush=True)
