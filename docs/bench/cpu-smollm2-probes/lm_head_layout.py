"""SmolLM2's lm_head shape (49152 x 576, fp32) by rows M: F.linear on the weight as stored, against
a matmul with a pre-transposed copy. Median ms of 15 calls.

    python docs/bench/cpu-smollm2-probes/lm_head_layout.py THREADS
"""
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]))
W = torch.randn(49152, 576)
Wt = W.t().contiguous()


def median_ms(fn, r=15):
    fn()
    ts = []
    for _ in range(r):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[r // 2] * 1e3


for m in (1, 4, 8):
    x = torch.randn(m, 576)
    print(f"M={m}: F.linear {median_ms(lambda: F.linear(x, W)):.1f} ms, x @ W^T pre-transposed {median_ms(lambda: x @ Wt):.1f} ms")
