"""Expert-load math for verifying draft trees on a Mixture-of-Experts target (pure torch reference).

Why: on an MoE target the verify forward over the tree nodes costs roughly per DISTINCT expert
activated per layer (each activated expert's weights are read once, whatever the number of tokens
routed to it), and under expert parallelism (EP) per most-loaded rank, since every rank waits for
the slowest. An expert-aware tree scheduler therefore asks, for a batch of candidate trees:
  - which experts each layer activates (the union over nodes; for the whole batch, because the
    batch is verified in one forward), and how many;
  - how that work spreads over EP ranks: distinct experts per rank (weight reads) and
    token-expert assignments per rank (rows of the rank's grouped GEMM);
  - how many experts one more node would newly activate (the greedy question).

Conventions:
  topk_ids   [B, N, L, K] integer  expert ids per tree b, node n, MoE layer l, routing slot k;
                                   -1 = no expert (padding). Predicted or observed routing.
  node_valid [B, N] bool           which nodes are real (trees are padded to N nodes).
  expert_to_rank [E] long          EP rank holding each expert. SGLang's EP without EPLB puts
                                   experts contiguously: rank r holds [r*E/R, (r+1)*E/R).
A node routing to the same expert twice in one layer (real top-k never does) counts as two
token-expert assignments but one distinct expert.

Everything here runs on whatever device the inputs are on and never calls .item(); only the
range check of `expert_histogram` reads values on the host, and only for CPU tensors.
The Triton versions live in `moe_kernels.expert_union` and are tested against these.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def contiguous_expert_to_rank(num_experts: int, num_ranks: int, device=None) -> torch.Tensor:
    """[E] long: SGLang's default EP placement, rank r holds experts [r*E/R, (r+1)*E/R)."""
    if num_ranks < 1 or num_experts % num_ranks != 0:
        raise ValueError(f"num_experts {num_experts} must be a multiple of num_ranks {num_ranks} (>= 1)")
    return torch.arange(num_experts, device=device) // (num_experts // num_ranks)


def _check_routing(topk_ids: torch.Tensor, node_valid: torch.Tensor, num_experts: int) -> None:
    if topk_ids.dim() != 4:
        raise ValueError(f"topk_ids shape {tuple(topk_ids.shape)} must be [B, N, L, K]")
    if tuple(node_valid.shape) != tuple(topk_ids.shape[:2]):
        raise ValueError(f"node_valid shape {tuple(node_valid.shape)} must be [B, N] = {tuple(topk_ids.shape[:2])}")
    if num_experts < 1:
        raise ValueError(f"num_experts {num_experts} must be >= 1")
    if not topk_ids.is_cuda and topk_ids.numel() and int(topk_ids.max()) >= num_experts:
        raise ValueError(f"expert id {int(topk_ids.max())} must be < num_experts {num_experts}")


def expert_histogram(topk_ids: torch.Tensor, node_valid: torch.Tensor, num_experts: int) -> torch.Tensor:
    """[B, L, E] long: token-expert assignments per tree, layer and expert (valid nodes, ids >= 0)."""
    _check_routing(topk_ids, node_valid, num_experts)
    B, N, L, K = topk_ids.shape
    keep = node_valid[:, :, None, None] & (topk_ids >= 0)  # [B, N, L, K]
    bins = torch.where(keep, topk_ids.long(), num_experts)  # bin E collects the dropped slots
    bins = bins.permute(0, 2, 1, 3).reshape(B, L, N * K)  # [B, L, N*K]
    hist = torch.zeros(B, L, num_experts + 1, dtype=torch.long, device=topk_ids.device)
    hist.scatter_add_(2, bins, torch.ones_like(bins))
    return hist[..., :num_experts]  # [B, L, E]


def expert_union_mask(
    topk_ids: torch.Tensor, node_valid: torch.Tensor, num_experts: int, batch: bool = False
) -> torch.Tensor:
    """Activated experts: [B, L, E] bool per tree, or [L, E] for the whole batch when batch=True."""
    hist = expert_histogram(topk_ids, node_valid, num_experts)  # [B, L, E]
    return hist.sum(0) > 0 if batch else hist > 0


def expert_union_counts(
    topk_ids: torch.Tensor, node_valid: torch.Tensor, num_experts: int, batch: bool = False
) -> torch.Tensor:
    """Distinct experts activated: [B, L] long per tree, or [L] for the whole batch when batch=True."""
    return expert_union_mask(topk_ids, node_valid, num_experts, batch).sum(-1)


def rank_loads(per_expert: torch.Tensor, expert_to_rank: torch.Tensor, num_ranks: int) -> torch.Tensor:
    """[..., E] -> [..., R] long: per_expert summed over the experts each EP rank holds.

    Pass a union mask to get distinct experts per rank (weight reads), or a histogram to get
    token-expert assignments per rank (grouped-GEMM rows). Both matter: a rank's MoE time is about
    max(weight bytes / bandwidth, rows * flops per row / compute).
    """
    E = per_expert.shape[-1]
    if tuple(expert_to_rank.shape) != (E,):
        raise ValueError(f"expert_to_rank shape {tuple(expert_to_rank.shape)} must be [E] = [{E}]")
    if num_ranks < 1:
        raise ValueError(f"num_ranks {num_ranks} must be >= 1")
    index = expert_to_rank.long().expand_as(per_expert)  # [..., E]
    out = torch.zeros(*per_expert.shape[:-1], num_ranks, dtype=torch.long, device=per_expert.device)
    return out.scatter_add_(-1, index, per_expert.long())  # [..., R]


def max_rank_load(per_expert: torch.Tensor, expert_to_rank: torch.Tensor, num_ranks: int) -> torch.Tensor:
    """[..., E] -> [...]: the most-loaded rank's load (what an EP forward waits for)."""
    return rank_loads(per_expert, expert_to_rank, num_ranks).amax(-1)


def _new_expert_slots(union_mask: torch.Tensor, node_topk: torch.Tensor) -> torch.Tensor:
    """[M, L, K] bool: slot k of candidate m names an expert that is neither in the union nor earlier in k."""
    L, E = union_mask.shape
    if node_topk.shape[-2] != L:
        raise ValueError(f"node_topk layers {node_topk.shape[-2]} must match union_mask layers {L}")
    ids = node_topk.long()  # [M, L, K]
    valid = ids >= 0
    safe = ids.clamp(0, E - 1)
    layer = torch.arange(L, device=ids.device)[None, :, None]  # [1, L, 1]
    in_union = union_mask.bool()[layer, safe]  # [M, L, K]
    K = ids.shape[-1]
    earlier = torch.ones(K, K, dtype=torch.bool, device=ids.device).tril(-1)  # [k, j]: j < k
    dup = ((ids[..., :, None] == ids[..., None, :]) & earlier).any(-1)  # [M, L, K]
    return valid & ~in_union & ~dup


def marginal_new_experts(
    union_mask: torch.Tensor, node_topk: torch.Tensor, per_layer: bool = False
) -> torch.Tensor:
    """How many experts adding a node would newly activate, summed over layers.

    union_mask [L, E] bool (the batch's current union), node_topk [L, K] for one node -> [] long,
    or [M, L, K] for M candidate nodes -> [M] long. per_layer=True keeps the layer axis
    ([L] or [M, L]), for cost models that weight layers (or ranks) differently.
    """
    single = node_topk.dim() == 2
    ids = node_topk[None] if single else node_topk  # [M, L, K]
    if ids.dim() != 3:
        raise ValueError(f"node_topk shape {tuple(node_topk.shape)} must be [L, K] or [M, L, K]")
    new = _new_expert_slots(union_mask, ids).sum(-1)  # [M, L]
    out = new if per_layer else new.sum(-1)
    return out[0] if single else out


def union_add(union_mask: torch.Tensor, node_topk: torch.Tensor) -> torch.Tensor:
    """[L, E] union with one node's experts [L, K] added (a new tensor; -1 slots are ignored)."""
    L, E = union_mask.shape
    ids = node_topk.long()  # [L, K]
    hit = torch.zeros(L, E + 1, dtype=torch.bool, device=union_mask.device)
    hit.scatter_(1, torch.where(ids >= 0, ids, E), True)
    return union_mask.bool() | hit[:, :E]


@dataclass
class ExpertLoad:
    """Everything a scheduler reads about one batch of trees; all int32 tensors on the input's device.

    hist         [B + 1, L, E]  token-expert assignments; row B is the whole batch.
    union_counts [B + 1, L]     distinct experts activated; row B is the whole batch.
    rank_experts [B + 1, L, R]  distinct experts per EP rank (weight reads).
    rank_tokens  [B + 1, L, R]  token-expert assignments per EP rank (grouped-GEMM rows).
    The extra batch row keeps one layout for kernels; use the properties for named views.
    """

    hist: torch.Tensor
    union_counts: torch.Tensor
    rank_experts: torch.Tensor
    rank_tokens: torch.Tensor

    @property
    def union(self) -> torch.Tensor:
        return self.hist[:-1] > 0  # [B, L, E] bool

    @property
    def batch_union(self) -> torch.Tensor:
        return self.hist[-1] > 0  # [L, E] bool

    @property
    def batch_counts(self) -> torch.Tensor:
        return self.union_counts[-1]  # [L]

    @property
    def max_rank_experts(self) -> torch.Tensor:
        return self.rank_experts.amax(-1)  # [B + 1, L]

    @property
    def max_rank_tokens(self) -> torch.Tensor:
        return self.rank_tokens.amax(-1)  # [B + 1, L]


def expert_load(
    topk_ids: torch.Tensor,
    node_valid: torch.Tensor,
    num_experts: int,
    expert_to_rank: torch.Tensor | None = None,
    num_ranks: int = 1,
) -> ExpertLoad:
    """Per-tree and whole-batch expert unions and EP rank loads (reference for the Triton kernel).

    expert_to_rank None means one rank holding every expert (no EP).
    """
    if expert_to_rank is None:
        expert_to_rank = torch.zeros(num_experts, dtype=torch.long, device=topk_ids.device)
    hist = expert_histogram(topk_ids, node_valid, num_experts)  # [B, L, E]
    hist = torch.cat([hist, hist.sum(0, keepdim=True)])  # [B + 1, L, E]
    mask = hist > 0
    return ExpertLoad(
        hist=hist.int(),
        union_counts=mask.sum(-1).int(),
        rank_experts=rank_loads(mask, expert_to_rank, num_ranks).int(),
        rank_tokens=rank_loads(hist, expert_to_rank, num_ranks).int(),
    )
