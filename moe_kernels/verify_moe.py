"""A verify-shaped MoE forward: few tokens (the tree nodes, T = 1..512) routed top-k over many experts.

Why: in a verify forward most experts get zero or one token, so the cost is reading the activated
experts' weights. The kernel sorts the (token, expert) pairs by expert and gives each program one
expert's block of up to BLOCK_M pairs, so each activated expert's weights are read once per block
and experts with no token are never touched.

Layout (SGLang's unquantized fused-MoE layout, Qwen3-MoE experts):
  x            [T, H]       hidden states of the verify tokens
  topk_ids     [T, K]       routed experts per token; -1 = none (e.g. a padded token)
  topk_weights [T, K]       router weights (already renormalised if the model does that)
  w13          [E, 2I, H]   gate_proj rows [0, I) then up_proj rows [I, 2I)
  w2           [E, H, I]    down_proj
  out[t] = sum_k topk_weights[t, k] * w2[e] @ (silu(w13[e, :I] @ x[t]) * (w13[e, I:] @ x[t])), e = topk_ids[t, k]

Three implementations: `moe_forward_reference` (loop over activated experts, fp32 math; syncs to
list them), `moe_forward_grouped_mm` (torch's grouped GEMM over expert-sorted rows), and
`fused_verify_moe` (two Triton launches: gate_up + SwiGLU, then down + router weight; the final
sum over k is a torch reduction, so no atomics and a deterministic result).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .expert_union import use_triton


def _check_moe_shapes(x, topk_ids, topk_weights, w13, w2) -> None:
    T, H = x.shape
    E, I2, H13 = w13.shape
    if H13 != H or I2 % 2:
        raise ValueError(f"w13 shape {tuple(w13.shape)} must be [E, 2I, H] with H = {H}")
    if tuple(w2.shape) != (E, H, I2 // 2):
        raise ValueError(f"w2 shape {tuple(w2.shape)} must be [E, H, I] = {(E, H, I2 // 2)}")
    if topk_ids.dim() != 2 or topk_ids.shape[0] != T or tuple(topk_weights.shape) != tuple(topk_ids.shape):
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} "
                         f"must both be [T, K] with T = {T}")


def moe_forward_reference(x, topk_ids, topk_weights, w13, w2) -> torch.Tensor:
    """[T, H] in x.dtype; fp32 math, one step per activated expert (the oracle; syncs once)."""
    _check_moe_shapes(x, topk_ids, topk_weights, w13, w2)
    I = w2.shape[2]
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e in torch.unique(topk_ids[topk_ids >= 0]).tolist():
        tok, slot = (topk_ids == e).nonzero(as_tuple=True)  # pairs routed to expert e
        xe = x[tok].float()  # [n, H]
        w = w13[e].float()
        h = F.silu(xe @ w[:I].T) * (xe @ w[I:].T)  # [n, I]
        y = (h @ w2[e].float().T) * topk_weights[tok, slot, None].float()  # [n, H]
        out.index_add_(0, tok, y)
    return out.to(x.dtype)


def _sort_pairs(topk_ids: torch.Tensor, num_experts: int):
    """Expert-sorted pair order, on device. Returns (order [P], bucket [P], counts [E + 1]).

    bucket is the expert id with -1 mapped to E (a last bucket nobody computes).
    """
    flat = topk_ids.reshape(-1).long()  # [P], pair p = token p // K, slot p % K
    bucket = torch.where(flat >= 0, flat, num_experts)
    counts = torch.zeros(num_experts + 1, dtype=torch.long, device=flat.device)
    counts.scatter_add_(0, bucket, torch.ones_like(bucket))
    return torch.sort(bucket, stable=True).indices, bucket, counts


def moe_forward_grouped_mm(x, topk_ids, topk_weights, w13, w2) -> torch.Tensor:
    """[T, H] via torch.nn.functional.grouped_mm over expert-sorted rows (torch's own grouped path)."""
    _check_moe_shapes(x, topk_ids, topk_weights, w13, w2)
    (T, H), K, E, I = x.shape, topk_ids.shape[1], w13.shape[0], w2.shape[2]
    order, bucket, counts = _sort_pairs(topk_ids, E)
    offs = counts[:E].cumsum(0).to(torch.int32)  # [E] end row of each expert's group
    xs = x[order // K]  # [P, H] rows sorted by expert; rows of bucket E lie past offs[-1]
    gate_up = F.grouped_mm(xs, w13.transpose(1, 2), offs=offs)  # [P, 2I]
    h = F.silu(gate_up[:, :I]) * gate_up[:, I:]  # [P, I]
    y = F.grouped_mm(h, w2.transpose(1, 2), offs=offs, out_dtype=torch.float32)  # [P, H]
    keep = (bucket[order] < E)[:, None]
    y = torch.where(keep, y * topk_weights.reshape(-1)[order, None].float(), 0.0)
    pairs = torch.empty_like(y).index_copy_(0, order, y)  # back to pair order
    return pairs.view(T, K, H).sum(1).to(x.dtype)


def align_pairs(topk_ids: torch.Tensor, num_experts: int, block_m: int):
    """Expert-sorted pairs padded per expert to multiples of block_m; no host sync.

    Returns pair_ids [max_blocks * block_m] (pair index, or P for padding) and block_expert
    [max_blocks] (expert of each block, -1 for blocks past the end). max_blocks is the static
    bound cdiv(P, block_m) + min(E, P), so the launch grid never depends on device values.
    """
    P = topk_ids.numel()
    E, dev = num_experts, topk_ids.device
    order, bucket, counts = _sort_pairs(topk_ids, E)
    blocks = (counts[:E] + block_m - 1) // block_m  # [E]
    block_end = blocks.cumsum(0)  # [E]
    pair_start = counts.cumsum(0) - counts  # [E + 1] first sorted position of each bucket
    max_blocks = triton.cdiv(P, block_m) + min(E, P)
    sorted_bucket = bucket[order]  # [P]
    rank = torch.arange(P, device=dev) - pair_start[sorted_bucket]  # position inside its expert
    first_slot = (block_end - blocks) * block_m  # [E]
    dump = max_blocks * block_m  # slot for bucket E, cut off below
    slot = torch.where(sorted_bucket < E, first_slot[sorted_bucket.clamp(max=E - 1)] + rank, dump)
    pair_ids = torch.full((dump + 1,), P, dtype=torch.int32, device=dev)
    pair_ids.scatter_(0, slot, order.to(torch.int32))
    block_expert = torch.searchsorted(block_end, torch.arange(max_blocks, device=dev), right=True)
    block_expert = torch.where(block_expert < E, block_expert, -1).to(torch.int32)
    return pair_ids[:dump], block_expert


@triton.jit
def _gate_up_kernel(
    x_ptr, w13_ptr, act_ptr, pair_ids_ptr, block_expert_ptr,
    H, I, K_TOP, P,
    s_xt, s_we, s_wn, s_wk, s_ap,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    e = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    if e < 0:
        return
    pair = tl.load(pair_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))  # [BLOCK_M]
    row_ok = pair < P
    tok = (pair // K_TOP).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] columns of I
    n_ok = offs_n < I
    w_base = w13_ptr + e * s_we
    gate = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    up = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < H
        a = tl.load(x_ptr + tok[:, None] * s_xt + offs_k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w_mask = k_ok[:, None] & n_ok[None, :]
        w_ptrs = w_base + offs_n[None, :] * s_wn + offs_k[:, None] * s_wk  # [BLOCK_K, BLOCK_N]
        wg = tl.load(w_ptrs, mask=w_mask, other=0.0)
        wu = tl.load(w_ptrs + I * s_wn, mask=w_mask, other=0.0)
        gate = tl.dot(a, wg, gate, input_precision=PRECISION)
        up = tl.dot(a, wu, up, input_precision=PRECISION)
    act = gate * tl.sigmoid(gate) * up  # SwiGLU
    out_ptrs = act_ptr + pair[:, None].to(tl.int64) * s_ap + offs_n[None, :]
    tl.store(out_ptrs, act.to(act_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _down_kernel(
    act_ptr, w2_ptr, weight_ptr, out_ptr, pair_ids_ptr, block_expert_ptr,
    H, I, P,
    s_ap, s_we, s_wn, s_wk, s_op,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    e = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    if e < 0:
        return
    pair = tl.load(pair_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))  # [BLOCK_M]
    row_ok = pair < P
    pair64 = pair.to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] columns of H
    n_ok = offs_n < H
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, I, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < I
        a = tl.load(act_ptr + pair64[:, None] * s_ap + offs_k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w2_ptr + e * s_we + offs_n[None, :] * s_wn + offs_k[:, None] * s_wk,
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)  # [BLOCK_K, BLOCK_N]
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
    acc *= tl.load(weight_ptr + pair, mask=row_ok, other=0.0)[:, None]
    tl.store(out_ptr + pair64[:, None] * s_op + offs_n[None, :], acc, mask=row_ok[:, None] & n_ok[None, :])


def _pick_blocks(num_pairs: int, num_experts: int, dtype: torch.dtype):
    """(BLOCK_M, BLOCK_N, BLOCK_K): BLOCK_M grows with pairs per expert (16 covers a verify batch)."""
    per_expert = num_pairs / max(num_experts, 1)
    block_m = 16 if per_expert <= 16 else 32 if per_expert <= 32 else 64
    return block_m, 64, 64 if dtype != torch.float32 else 32


def fused_verify_moe(x, topk_ids, topk_weights, w13, w2, blocks: tuple[int, int, int] | None = None):
    """[T, H] in x.dtype: Triton on CUDA or under TRITON_INTERPRET=1, else the torch reference.

    blocks (BLOCK_M, BLOCK_N, BLOCK_K) overrides the heuristic (powers of two, >= 16).
    The activation between the two GEMMs is stored in x.dtype, as SGLang's fused MoE does.
    """
    if not use_triton(x):
        return moe_forward_reference(x, topk_ids, topk_weights, w13, w2)
    _check_moe_shapes(x, topk_ids, topk_weights, w13, w2)
    (T, H), K, E, I = x.shape, topk_ids.shape[1], w13.shape[0], w2.shape[2]
    P = T * K
    if P == 0:
        return torch.zeros_like(x)
    x, w13, w2 = x.contiguous(), w13.contiguous(), w2.contiguous()
    block_m, block_n, block_k = blocks or _pick_blocks(P, E, x.dtype)
    pair_ids, block_expert = align_pairs(topk_ids, E, block_m)
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    act = torch.empty(P, I, dtype=x.dtype, device=x.device)  # [P, I] in pair order
    _gate_up_kernel[(block_expert.numel(), triton.cdiv(I, block_n))](
        x, w13, act, pair_ids, block_expert, H, I, K, P,
        x.stride(0), *w13.stride(), act.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PRECISION=precision,
    )
    weights = topk_weights.reshape(-1).float().contiguous()  # [P]
    pairs = torch.zeros(P, H, dtype=torch.float32, device=x.device)  # rows of -1 pairs stay 0
    _down_kernel[(block_expert.numel(), triton.cdiv(H, block_n))](
        act, w2, weights, pairs, pair_ids, block_expert, H, I, P,
        act.stride(0), *w2.stride(), pairs.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PRECISION=precision,
    )
    return pairs.view(T, K, H).sum(1).to(x.dtype)
