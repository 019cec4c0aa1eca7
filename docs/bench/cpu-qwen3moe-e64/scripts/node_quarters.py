"""Where a best-first tree's expected accepted tokens and its new experts sit (the numbers behind
"new experts and acceptance fall together" in docs/benchmarks.md).

    python docs/bench/cpu-qwen3moe-e64/scripts/node_quarters.py TRACE [NUM_EXPERTS]

TRACE: an expert trace of a scheduling-off server (launch.bench --expert-aware-off --expert-trace).
For rounds whose trees all have >= 30 nodes (budget 32), nodes are taken in best-first (pop)
order and split in quarters; per quarter: share of the calibrated expected tokens, of the tokens
actually accepted, and of the (layer, expert) reads a node adds to the batch's union.
"""

import sys

import torch

from sglang_jetspec.bench.expert_replay import load_trace


def main() -> None:
    rounds = load_trace(sys.argv[1])
    num_experts = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    for bs in (1, 4):
        sel = [r for r in rounds if len(r.trees) == bs and min(t.n for t in r.trees) >= 30]
        share_p, share_new, share_acc = (torch.zeros(4, dtype=torch.float64) for _ in range(3))
        for r in sel:
            layers = torch.arange(r.routed[0].shape[1])[:, None]
            union = torch.zeros(len(layers), num_experts, dtype=torch.bool)
            for routed in r.routed:  # the roots are verified anyway
                union[layers, routed[0]] = True
            n = min(t.n for t in r.trees)
            for v in range(1, n):
                q = min(3, (v - 1) * 4 // (n - 1))
                for b in range(bs):
                    ex = r.routed[b][v]  # [L, K]
                    share_new[q] += float((~union[layers, ex]).sum()) / len(layers)
                    union[layers, ex] = True
                    share_p[q] += float(r.probs[b][v - 1])
                    share_acc[q] += float(v in r.paths[b][1:])
        fmt = lambda x: " / ".join(f"{100 * v:.0f}%" for v in (x / x.sum()).tolist())  # noqa: E731
        print(f"batch {bs}, {len(sel)} rounds: expected tokens {fmt(share_p)}; accepted {fmt(share_acc)}; "
              f"new experts {fmt(share_new)}")


if __name__ == "__main__":
    main()
