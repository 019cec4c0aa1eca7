"""Forward KL against a top-k teacher, optionally over a candidate vocabulary: the cheap CPU loss.

Why: projecting every graded slot through the 49152 x 576 lm_head (forward and backward) was
two thirds of a CPU training step. Two approximations of KL(teacher || head), each exact in a
limit the tests check:
  1. the teacher is kept as its top-k tokens plus one "rest" bucket of mass r = 1 - sum p_topk;
     the loss is the KL between the two distributions coarse-grained that way (exact when
     k = V; with greedy-regenerated data the teacher's argmax, the data token, is always kept);
  2. the head's normaliser log Z = logsumexp over V is estimated from a candidate set shared by
     the step's rows: every teacher top-k id (weight 1) plus uniformly sampled other tokens, each
     standing for (V - |union|) / n_sampled tokens (exact when the candidates cover V).
KL_coarse = sum_topk p (log p - log q) + r (log r - log q_rest), log q_v = z_v - log Z,
q_rest = 1 - sum_topk q_v.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TopKTeacher:
    ids: torch.Tensor        # [R, k] long
    logprobs: torch.Tensor   # [R, k] fp32 (full-vocabulary log-probs of those ids)

    @classmethod
    def from_logprobs(cls, logprobs: torch.Tensor, k: int) -> "TopKTeacher":
        """Full teacher log-probs [R, V] -> its top-k."""
        if not 1 <= k <= logprobs.shape[-1]:
            raise ValueError(f"teacher top-k {k} must be in [1, vocab {logprobs.shape[-1]}]")
        top = logprobs.float().topk(k, dim=-1)
        return cls(top.indices, top.values)


@dataclass
class Candidates:
    """A shared vocabulary subset for one step's rows."""
    ids: torch.Tensor         # [N] long, sorted, distinct
    log_weight: torch.Tensor  # [N] fp32: 0 for teacher ids, log(tokens each sample stands for) else
    union_size: int           # how many of ids are teacher top-k ids


def pick_candidates(teacher_ids: torch.Tensor, vocab_size: int, total: int,
                    generator: torch.Generator | None = None) -> Candidates:
    """teacher_ids [...] -> the union of them plus uniform negatives up to `total` ids in all.

    A union larger than `total` is kept whole (no negatives; log Z is then underestimated by the
    mass outside the union). total >= vocab_size gives the whole vocabulary (exact)."""
    if total < 1:
        raise ValueError(f"loss vocabulary {total} must be >= 1")
    union = torch.unique(teacher_ids.flatten().cpu())
    rest_size = vocab_size - len(union)
    n_neg = min(max(0, total - len(union)), rest_size)
    if n_neg == 0:
        return Candidates(union, torch.zeros(len(union)), len(union))
    in_union = torch.zeros(vocab_size, dtype=torch.bool)
    in_union[union] = True
    rest = torch.nonzero(~in_union)[:, 0]  # [V - |U|]
    neg = rest if n_neg == rest_size else rest[torch.randperm(rest_size, generator=generator)[:n_neg]]
    ids = torch.cat([union, neg])
    lw = torch.cat([torch.zeros(len(union)), torch.full((n_neg,), float(torch.tensor(rest_size / n_neg).log()))])
    order = ids.argsort()
    return Candidates(ids[order], lw[order], len(union))


def coarse_kl(log_z: torch.Tensor, top_logits: torch.Tensor, teacher_lp: torch.Tensor) -> torch.Tensor:
    """KL between teacher and head, both coarse-grained to (top-k ids, rest).

    log_z [M] the head's normaliser; top_logits [M, k] head logits
    at the teacher's top-k ids; teacher_lp [M, k] the teacher's log-probs there -> [M] fp32.
    """
    lq = top_logits.float() - log_z[:, None]  # [M, k]
    p = teacher_lp.exp()
    r = (1.0 - p.sum(-1)).clamp_min(0.0)  # [M] teacher rest mass
    q_rest = (1.0 - lq.exp().sum(-1)).clamp_min(1e-8)  # [M]
    head_part = (p * (teacher_lp - lq)).sum(-1)
    rest_part = torch.where(r > 0, r * (r.clamp_min(1e-30).log() - q_rest.log()), torch.zeros_like(r))
    return head_part + rest_part


def topk_kl_full(hidden: torch.Tensor, lm_head: nn.Linear, teacher_ids: torch.Tensor,
                 teacher_lp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact normaliser: hidden [M, d] -> (KL_coarse [M], logits [M, V] fp32)."""
    logits = lm_head(hidden).float()
    log_z = torch.logsumexp(logits, dim=-1)
    return coarse_kl(log_z, logits.gather(1, teacher_ids), teacher_lp), logits


def topk_kl_candidates(hidden: torch.Tensor, lm_head: nn.Linear, teacher_ids: torch.Tensor,
                       teacher_lp: torch.Tensor, total: int,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, Candidates]:
    """Estimated normaliser over `total` candidates: hidden [M, d], teacher [M, k] ->
    (KL_coarse [M], candidate logits [M, N], Candidates)."""
    vocab = lm_head.weight.shape[0]
    cand = pick_candidates(teacher_ids, vocab, total, generator)
    dev = hidden.device
    w = lm_head.weight[cand.ids.to(dev)]  # [N, d]
    b = None if lm_head.bias is None else lm_head.bias[cand.ids.to(dev)]
    logits = torch.nn.functional.linear(hidden, w, b).float()  # [M, N]
    log_z = torch.logsumexp(logits + cand.log_weight.to(dev), dim=-1)  # [M]
    pos = torch.searchsorted(cand.ids.to(dev), teacher_ids)  # [M, k] every top-k id is a candidate
    return coarse_kl(log_z, logits.gather(1, pos), teacher_lp), logits, cand
