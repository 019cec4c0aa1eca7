"""Triton kernels for expert unions and EP rank loads of a batch of draft trees, on device.

Why: the expert-aware tree scheduler runs every verify round; a host sync per round (an .item()
or a Python loop over trees) would stall the GPU pipeline and break CUDA graphs. These kernels
take routing already on the device and leave every answer in device tensors.

Two launches make `expert_load`:
  1. `_hist_kernel`   grid (B * L, cdiv(N, BLOCK_N)): each program adds its nodes' top-k slots
     into hist[b, l, :] with integer atomics (exact and order-free, so deterministic).
  2. `_reduce_kernel` grid (B + 1, L): program (b, l) reads one histogram row (row B sums the B
     trees, i.e. the batch, and stores it) and writes the distinct-expert count and per-rank
     distinct experts / token-expert assignments, looping over experts in chunks of BLOCK_E.
`marginal_new_experts` is one launch, grid (M, cdiv(L, BLOCK_L)), for M candidate nodes.

Pure-torch references (and the conventions) are in `sglang_jetspec.core.expert_load`; the wrappers
fall back to them unless the inputs are on CUDA or TRITON_INTERPRET=1 is set.
Limits: expert ids must be < num_experts (not checked on device); K <= 64; E, N, L, B any size
(the tested and benchmarked range is E <= 512, L <= 96, K <= 10, N <= 256, B <= 64).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from sglang_jetspec.core import expert_load as ref
from sglang_jetspec.core.expert_load import ExpertLoad


def use_triton(t: torch.Tensor) -> bool:
    """Triton runs on CUDA tensors, or anywhere under the interpreter (TRITON_INTERPRET=1)."""
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _hist_kernel(
    ids_ptr, valid_ptr, hist_ptr,
    N, L, K, E,
    s_ib, s_in, s_il, s_ik,  # topk_ids strides [B, N, L, K]
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)  # b * L + l
    b = pid // L
    l = pid % L
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    offs_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    node_ok = tl.load(valid_ptr + b * N + offs_n, mask=offs_n < N, other=0) != 0
    ok = node_ok[:, None] & (offs_k[None, :] < K)  # [BLOCK_N, BLOCK_K]
    ptrs = ids_ptr + b.to(tl.int64) * s_ib + offs_n[:, None].to(tl.int64) * s_in + l * s_il + offs_k[None, :] * s_ik
    ids = tl.load(ptrs, mask=ok, other=-1)
    ok = ok & (ids >= 0)
    row = hist_ptr + pid.to(tl.int64) * E
    tl.atomic_add(row + ids, tl.full(ids.shape, 1, tl.int32), mask=ok, sem="relaxed")


@triton.jit
def _reduce_kernel(
    hist_ptr, rank_ptr, counts_ptr, rank_experts_ptr, rank_tokens_ptr,
    B, L, E, R,
    BLOCK_E: tl.constexpr, BLOCK_R: tl.constexpr,
):
    b = tl.program_id(0)  # b == B: the whole batch
    l = tl.program_id(1)
    out_row = b * L + l  # row in the [B + 1, L, ...] outputs
    offs_r = tl.arange(0, BLOCK_R)  # [BLOCK_R]
    hits = tl.zeros((BLOCK_E,), tl.int32)
    r_exp = tl.zeros((BLOCK_R,), tl.int32)
    r_tok = tl.zeros((BLOCK_R,), tl.int32)
    for e0 in range(0, E, BLOCK_E):
        offs_e = e0 + tl.arange(0, BLOCK_E)  # [BLOCK_E]
        e_ok = offs_e < E
        if b < B:
            h = tl.load(hist_ptr + out_row.to(tl.int64) * E + offs_e, mask=e_ok, other=0)
        else:
            h = tl.zeros((BLOCK_E,), tl.int32)
            for bb in range(0, B):
                h += tl.load(hist_ptr + (bb * L + l).to(tl.int64) * E + offs_e, mask=e_ok, other=0)
            tl.store(hist_ptr + out_row.to(tl.int64) * E + offs_e, h, mask=e_ok)
        hit = (h > 0).to(tl.int32)  # [BLOCK_E]
        hits += hit
        rank = tl.load(rank_ptr + offs_e, mask=e_ok, other=-1)
        onehot = (rank[:, None] == offs_r[None, :]).to(tl.int32)  # [BLOCK_E, BLOCK_R]
        r_exp += tl.sum(onehot * hit[:, None], axis=0)
        r_tok += tl.sum(onehot * h[:, None], axis=0)
    tl.store(counts_ptr + out_row, tl.sum(hits, axis=0))
    r_ok = offs_r < R
    tl.store(rank_experts_ptr + out_row * R + offs_r, r_exp, mask=r_ok)
    tl.store(rank_tokens_ptr + out_row * R + offs_r, r_tok, mask=r_ok)


def expert_load(
    topk_ids: torch.Tensor,
    node_valid: torch.Tensor,
    num_experts: int,
    expert_to_rank: torch.Tensor | None = None,
    num_ranks: int = 1,
) -> ExpertLoad:
    """Same contract as `sglang_jetspec.core.expert_load.expert_load`; no host sync on CUDA.

    topk_ids [B, N, L, K] int32/int64 (-1 = none), node_valid [B, N] bool, expert_to_rank [E].
    """
    if not use_triton(topk_ids):
        return ref.expert_load(topk_ids, node_valid, num_experts, expert_to_rank, num_ranks)
    if topk_ids.dim() != 4 or tuple(node_valid.shape) != tuple(topk_ids.shape[:2]):
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} must be [B, N, L, K] and node_valid "
                         f"{tuple(node_valid.shape)} must be [B, N]")
    B, N, L, K = topk_ids.shape
    E, R, dev = num_experts, num_ranks, topk_ids.device
    if K > 64:
        raise ValueError(f"top-k {K} must be <= 64")
    if expert_to_rank is None:
        expert_to_rank = torch.zeros(E, dtype=torch.int32, device=dev)
    if tuple(expert_to_rank.shape) != (E,) or R < 1:
        raise ValueError(f"expert_to_rank shape {tuple(expert_to_rank.shape)} must be [{E}], num_ranks {R} >= 1")
    valid = node_valid.to(torch.int8).contiguous()  # [B, N]
    hist = torch.zeros(B + 1, L, E, dtype=torch.int32, device=dev)
    counts = torch.empty(B + 1, L, dtype=torch.int32, device=dev)
    rank_experts = torch.empty(B + 1, L, R, dtype=torch.int32, device=dev)
    rank_tokens = torch.empty(B + 1, L, R, dtype=torch.int32, device=dev)
    if B * N > 0:
        block_n = min(64, triton.next_power_of_2(max(N, 1)))
        _hist_kernel[(B * L, triton.cdiv(N, block_n))](
            topk_ids, valid, hist, N, L, K, E, *topk_ids.stride(),
            BLOCK_N=block_n, BLOCK_K=triton.next_power_of_2(K),
        )
    _reduce_kernel[(B + 1, L)](
        hist, expert_to_rank.to(torch.int32).contiguous(), counts, rank_experts, rank_tokens,
        B, L, E, R, BLOCK_E=min(128, triton.next_power_of_2(E)), BLOCK_R=triton.next_power_of_2(R),
    )
    return ExpertLoad(hist=hist, union_counts=counts, rank_experts=rank_experts, rank_tokens=rank_tokens)


@triton.jit
def _marginal_kernel(
    union_ptr, ids_ptr, out_ptr,
    L, K, E,
    s_im, s_il, s_ik,  # node_topk strides [M, L, K]
    BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr,
):
    m = tl.program_id(0)
    offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)  # [BLOCK_L]
    offs_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    ok = (offs_l[:, None] < L) & (offs_k[None, :] < K)  # [BLOCK_L, BLOCK_K]
    ptrs = ids_ptr + m.to(tl.int64) * s_im + offs_l[:, None] * s_il + offs_k[None, :] * s_ik
    ids = tl.load(ptrs, mask=ok, other=-1)
    ok = ok & (ids >= 0)
    in_union = tl.load(union_ptr + offs_l[:, None].to(tl.int64) * E + ids, mask=ok, other=0) != 0
    # a slot repeating an expert named earlier in the same layer adds nothing
    same = ids[:, :, None] == ids[:, None, :]  # [BLOCK_L, BLOCK_K(k), BLOCK_K(j)]
    earlier = offs_k[None, :, None] > offs_k[None, None, :]  # j < k
    dup = tl.max((same & earlier).to(tl.int32), axis=2) != 0  # [BLOCK_L, BLOCK_K]
    new = (ok & ~in_union & ~dup).to(tl.int32)
    tl.store(out_ptr + m * L + offs_l, tl.sum(new, axis=1), mask=offs_l < L)


def marginal_new_experts(
    union_mask: torch.Tensor, node_topk: torch.Tensor, per_layer: bool = False
) -> torch.Tensor:
    """Same contract as the reference: union [L, E], nodes [L, K] -> [] or [M, L, K] -> [M] (int32 here)."""
    if not use_triton(node_topk):
        return ref.marginal_new_experts(union_mask, node_topk, per_layer)
    single = node_topk.dim() == 2
    ids = node_topk[None] if single else node_topk  # [M, L, K]
    if ids.dim() != 3 or union_mask.dim() != 2 or ids.shape[1] != union_mask.shape[0]:
        raise ValueError(f"node_topk {tuple(node_topk.shape)} must be [L, K] or [M, L, K] with L = "
                         f"union_mask {tuple(union_mask.shape)}[0]")
    M, L, K = ids.shape
    E = union_mask.shape[1]
    union = union_mask.contiguous()
    union = union.view(torch.uint8) if union.dtype == torch.bool else union.to(torch.uint8)
    out = torch.empty(M, L, dtype=torch.int32, device=ids.device)
    if M > 0:
        block_l = min(16, triton.next_power_of_2(L))
        _marginal_kernel[(M, triton.cdiv(L, block_l))](
            union, ids, out, L, K, E, *ids.stride(),
            BLOCK_L=block_l, BLOCK_K=triton.next_power_of_2(K),
        )
    res = out if per_layer else out.sum(-1, dtype=torch.int32)
    return res[0] if single else res
