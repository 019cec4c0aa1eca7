"""Raw oneDNN packed products over all of SmolLM2-135M's linear shapes (30 layers + lm_head, random
weights, ~537 MB) at several row counts, against F.linear and torch.mv for one row (probe).

    python docs/bench/cpu-linear-onednn/model_rows_probe.py
"""
import torch, time, sys
torch.set_grad_enabled(False)
torch.manual_seed(0)
shapes = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)] * 30 + [(49152, 576)]
ws = [torch.randn(o, i) for o, i in shapes]
ps = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in ws]
def run(rows, kind):
    xs = {i: torch.randn(rows, i) for i in (576, 1536)}
    def f():
        for w, p in zip(ws, ps):
            x = xs[w.shape[1]]
            if kind == "packed": torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "")
            elif kind == "F.linear": torch.nn.functional.linear(x, w)
            else: torch.mv(w, x[0])
    for _ in range(3): f()
    t = time.perf_counter()
    for _ in range(10): f()
    return (time.perf_counter() - t) / 10 * 1e3
for th in (1, 2):
    torch.set_num_threads(th)
    out = [f"threads {th}:"]
    for rows, kind in ((1, "packed"), (1, "F.linear"), (1, "mv"), (6, "packed"), (8, "packed")):
        out.append(f"{kind}[{rows}] {run(rows, kind):.1f} ms")
    print("  ".join(out), flush=True)
for th in (2, 1):
    torch.set_num_threads(th)
    print(f"threads {th}: " + "  ".join(f"[{r}] {run(r, 'packed'):.1f}" for r in (1, 2, 3, 4, 5, 6, 8, 12, 16)), flush=True)
