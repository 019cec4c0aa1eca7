"""What one expert read costs on this CPU in the loop SGLang's CPU MoE path runs
(sglang/srt/layers/moe/fused_moe_native.py: moe_forward_native loops over the experts a batch
uses, two small matmuls each), at qwen3moe-e64's shapes (hidden 192, expert MLP 32, top-4).

    OMP_NUM_THREADS=1 python docs/bench/cpu-qwen3moe-e64/scripts/moe_loop_timing.py
"""

import time

import torch
import torch.nn.functional as F

E, H, I, K, TOKENS = 64, 192, 32, 4, 32


def moe_layer(x, ids, w13, w2):
    counts = torch.zeros(x.shape[0], E, dtype=torch.long).scatter_(1, ids, 1).sum(0).tolist()
    xs = x[ids.reshape(-1).argsort() // ids.shape[1]]
    out, start = [], 0
    for e, n in enumerate(counts):
        if n:
            gate, up = F.linear(xs[start:start + n], w13[e]).chunk(2, -1)
            out.append(F.linear(F.silu(gate) * up, w2[e]))
            start += n
    return torch.cat(out)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    w13, w2 = torch.randn(E, 2 * I, H), torch.randn(E, H, I)
    x = torch.randn(TOKENS, H)
    for used in (8, 16, 32, 64):
        ids = torch.stack([torch.randperm(used)[:K] for _ in range(TOKENS)])  # tokens over `used` experts
        for _ in range(20):
            moe_layer(x, ids, w13, w2)
        t0 = time.perf_counter()
        for _ in range(200):
            moe_layer(x, ids, w13, w2)
        print(f"{TOKENS} tokens, {used} experts used: {(time.perf_counter() - t0) / 200 * 1e3:.3f} ms per layer")


if __name__ == "__main__":
    main()
