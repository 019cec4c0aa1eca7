"""Is the router learned and used? Expert-load entropy and consecutive-token expert reuse.

- load entropy: the entropy of the share of top-k assignments each expert receives in a layer,
  divided by log(E): 1.0 = perfectly even load; a router collapsed onto its top-k experts gives
  log(k) / log(E) (1/3 for top-2 of 8).
- consecutive reuse: for neighbouring tokens of one sequence, how often they share at least one
  expert ("any") or their whole top-k set ("all"). An expert-aware speculative scheduler gains
  when a drafted chain keeps hitting the same experts. Compare with `random_reuse_baseline`: a
  router that picks uniform random sets gives any = 1 - C(E-k, k)/C(E, k), all = 1 / C(E, k).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


def routed_experts(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """router_logits [N, E] -> the top-k expert ids per token [N, k] (the serving router's choice)."""
    return router_logits.float().softmax(-1).topk(top_k, dim=-1).indices


def expert_load(ids: torch.Tensor, num_experts: int) -> torch.Tensor:
    """ids [N, k] -> share of the assignments per expert [E] (sums to 1)."""
    counts = torch.bincount(ids.reshape(-1), minlength=num_experts).float()
    return counts / counts.sum().clamp_min(1)


def normalized_entropy(share: torch.Tensor) -> float:
    """share [E] (sums to 1) -> entropy / log(E), in [0, 1]."""
    p = share[share > 0]
    return float(-(p * p.log()).sum() / math.log(len(share)))


def consecutive_reuse(ids: torch.Tensor) -> tuple[float, float, int]:
    """ids [N, k] of ONE sequence in order -> (rate sharing >= 1 expert, rate sharing all k, pairs)."""
    if len(ids) < 2:
        return 0.0, 0.0, 0
    prev, cur = ids[:-1], ids[1:]  # [N-1, k]
    shared = (cur[:, :, None] == prev[:, None, :]).any(-1).sum(-1)  # [N-1] experts reused
    k = ids.shape[1]
    return float((shared >= 1).float().mean()), float((shared == k).float().mean()), len(cur)


def random_reuse_baseline(num_experts: int, top_k: int) -> tuple[float, float]:
    """(any, all) reuse rates of a router drawing uniform random k-subsets for every token."""
    sets = math.comb(num_experts, top_k)
    return 1.0 - math.comb(num_experts - top_k, top_k) / sets, 1.0 / sets


@dataclass
class RouterStats:
    tokens: int
    load_entropy: list[float]    # per layer, normalised
    reuse_any: list[float]       # per layer
    reuse_all: list[float]       # per layer
    load: list[list[float]]      # per layer, share per expert
    random_any: float
    random_all: float

    def as_dict(self) -> dict:
        return asdict(self)


class RouterRecorder:
    """Accumulates routing decisions of many sequences, layer by layer."""

    def __init__(self, num_layers: int, num_experts: int, top_k: int):
        self.num_experts, self.top_k = num_experts, top_k
        self.ids: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self.pairs = [[0, 0.0, 0.0] for _ in range(num_layers)]  # [pairs, any_sum, all_sum]

    def add_sequence(self, router_logits: list[torch.Tensor]) -> None:
        """router_logits: per layer [N, E] for the N real tokens of one sequence, in order."""
        if len(router_logits) != len(self.ids):
            raise ValueError(f"got router logits of {len(router_logits)} layers; expected {len(self.ids)}")
        for layer, logits in enumerate(router_logits):
            ids = routed_experts(logits, self.top_k)
            self.ids[layer].append(ids)
            a, b, n = consecutive_reuse(ids)
            acc = self.pairs[layer]
            acc[0] += n
            acc[1] += a * n
            acc[2] += b * n

    def result(self) -> RouterStats:
        loads = [expert_load(torch.cat(ids), self.num_experts) for ids in self.ids]
        rnd_any, rnd_all = random_reuse_baseline(self.num_experts, self.top_k)
        return RouterStats(
            tokens=int(sum(len(x) for x in self.ids[0])),
            load_entropy=[round(normalized_entropy(s), 4) for s in loads],
            reuse_any=[round(p[1] / max(p[0], 1), 4) for p in self.pairs],
            reuse_all=[round(p[2] / max(p[0], 1), 4) for p in self.pairs],
            load=[[round(float(x), 4) for x in s] for s in loads],
            random_any=round(rnd_any, 4), random_all=round(rnd_all, 4))


@torch.no_grad()
def collect_router_stats(model, sequences: list[torch.Tensor]) -> RouterStats:
    """Run a Qwen3MoeForCausalLM over each token sequence (ids [T], one at a time, no padding)
    and record the experts its routers pick for every token."""
    cfg = model.config
    rec = RouterRecorder(cfg.num_hidden_layers, cfg.num_experts, cfg.num_experts_per_tok)
    for ids in sequences:
        out = model.model(input_ids=ids[None], output_router_logits=True, use_cache=False)
        rec.add_sequence([x.reshape(-1, cfg.num_experts) for x in out.router_logits])
    return rec.result()
