"""SmolLM2's lm_head shape (49152 x 576, fp32) by rows M: F.linear on the weight as stored, against
a matmul with a pre-transposed copy. Median ms of 15 calls.

    python docs/bench/cpu-smollm2-probes/lm_head_layout.py THREADS
"""
import sys

import torch
import torch.nn.functional as F

from sglang_jetspec.reference.round_cost import _median_ms  # warm-up call, then the median

torch.set_num_threads(int(sys.argv[1]))
W = torch.randn(49152, 576)
Wt = W.t().contiguous()


def median_ms(fn):
    return _median_ms(fn, repeats=15)


for m in (1, 4, 8):
    x = torch.randn(m, 576)
    print(f"M={m}: F.linear {median_ms(lambda: F.linear(x, W)):.1f} ms, x @ W^T pre-transposed {median_ms(lambda: x @ Wt):.1f} ms")
