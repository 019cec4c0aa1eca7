"""Probe: fp32 vs bf16 F.linear at the decoder layer shapes of SmolLM2-135M (one q-, one k/v-, one
gate- and one down-projection shape per layer, 30 layers of distinct weights), by row count.
Usage: OMP_NUM_THREADS=2 python docs/bench/cpu-smollm2-reference-stage5/scripts/linear_rows.py
Output of 2026-12-02 (Intel Xeon VM, 2 threads), ms: fp32 rows 1/6/8/16 9.1/14.5/15.2/21.6;
bf16 10.5/11.0/10.7/10.9."""
import torch, time, statistics, sys
import torch.nn.functional as F
torch.set_num_threads(2)
shapes = {"q":(576,576),"kv":(192,576),"gate":(1536,576),"down":(576,1536)}
def bench(fn):
    fn(); ts=[]
    for _ in range(7):
        t0=time.perf_counter(); fn(); ts.append((time.perf_counter()-t0)*1e3)
    return round(statistics.median(ts),1)
for dt in (torch.float32, torch.bfloat16):
    Ws = {k: [torch.randn(*s).to(dt) for _ in range(30)] for k, s in shapes.items()}
    for m in (1, 6, 8, 16):
        x = {k: torch.randn(m, s[1]).to(dt) for k, s in shapes.items()}
        print(dt, m, bench(lambda: [F.linear(x[k], W) for k in shapes for W in Ws[k]]), flush=True)
