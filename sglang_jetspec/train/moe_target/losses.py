"""The distillation objective: KL to SmolLM2's top-k (or CE on its greedy token) over the full
vocabulary, plus a per-layer load-balancing term that keeps the router using every expert.

The vocabulary projection (49152 x hidden per row) is most of the step's memory and time, so
`vocab_loss_backward` runs it in row chunks: each chunk's logits are built, reduced to a loss,
back-propagated into the hidden rows and the lm_head, and freed before the next chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sglang_jetspec.train.topk_loss import coarse_kl


def soft_kl(logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_lp: torch.Tensor) -> torch.Tensor:
    """logits [S, V], teacher top-k [S, k] -> KL(teacher || student) per row [S], with the
    teacher's mass outside its top-k as one 'rest' bucket (exact normaliser over V)."""
    logits = logits.float()
    return coarse_kl(torch.logsumexp(logits, -1), logits.gather(1, teacher_ids), teacher_lp)


def hard_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [H, V], targets [H] -> cross-entropy per row [H]."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def balance_loss(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch-Transformer balance for one layer: router_logits [N, E] of real tokens ->
    E * sum_e f_e * P_e, f_e the share of the N*top_k assignments expert e got, P_e its mean
    router probability. 1.0 when perfectly balanced, up to E / top_k when collapsed."""
    n, e = router_logits.shape
    if n == 0:
        return router_logits.sum() * 0.0
    probs = router_logits.float().softmax(-1)  # [N, E]
    picked = probs.topk(top_k, dim=-1).indices  # [N, k]
    share = torch.bincount(picked.reshape(-1), minlength=e).float() / (n * top_k)  # [E], no grad
    return e * (share * probs.mean(0)).sum()


def fused_vocab_grad(h: torch.Tensor, weight: torch.Tensor, teacher_ids=None, teacher_lp=None,
                     targets=None, matmul_dtype=torch.bfloat16):
    """Loss rows and their logit gradients in one pass, without autograd over [m, V].

    h [m, d], weight [V, d]; either a top-k teacher (teacher_ids/teacher_lp [m, k], the loss
    is `soft_kl`) or targets [m] (the loss is `hard_ce`). Returns (loss [m], dloss/dlogits
    [m, V] fp32, argmax [m]). Why: autograd through logsumexp/gather/cast over 49152 columns
    made several full-size passes and was three quarters of a CPU step; here the softmax is
    one pass and the gradient is q * c_row plus a sparse correction at the k teacher ids:
      soft: d/dz_j = q_j (P - f Q) + [j in K] (f q_j - p_j),  P = sum p_k, Q = sum_K q_k,
            f = r / (1 - Q) with r = 1 - P the teacher's rest mass (0 where 1 - Q is clamped),
      hard: d/dz_j = q_j - [j = target].
    The projection runs in `matmul_dtype` (bf16 uses the CPU's bf16 units); the softmax and
    loss are fp32. Tested against autograd of soft_kl / hard_ce.
    """
    z = F.linear(h.to(matmul_dtype), weight.to(matmul_dtype)).float()  # [m, V]
    argmax = z.argmax(-1)
    picked = teacher_ids if targets is None else targets[:, None]
    z_pick = z.gather(1, picked)  # [m, k] (k = 1 for hard rows)
    zmax = z.max(-1, keepdim=True).values
    q = z.sub_(zmax).exp_()  # in place: z is no longer needed
    total = q.sum(-1, keepdim=True)
    q.div_(total)  # [m, V] softmax
    log_z = (zmax + total.log())[:, 0]  # [m]
    lq = z_pick - log_z[:, None]  # [m, k]
    if targets is not None:
        loss = -lq[:, 0]
        q.scatter_add_(1, picked, torch.full_like(lq, -1.0))
        return loss, q, argmax
    teacher_lp = teacher_lp.float()
    p = teacher_lp.exp()
    r = (1.0 - p.sum(-1)).clamp_min(0.0)  # [m]
    qk = lq.exp()  # [m, k]
    big_q = qk.sum(-1)
    q_rest = (1.0 - big_q).clamp_min(1e-8)
    rest = torch.where(r > 0, r * (r.clamp_min(1e-30).log() - q_rest.log()), torch.zeros_like(r))
    loss = (p * (teacher_lp - lq)).sum(-1) + rest
    f = torch.where((1.0 - big_q > 1e-8) & (r > 0), r / q_rest, torch.zeros_like(r))  # [m]
    q.mul_((p.sum(-1) - f * big_q)[:, None])
    q.scatter_add_(1, picked, f[:, None] * qk - p)
    return loss, q, argmax


def vocab_loss_backward(hidden: torch.Tensor, lm_head: torch.nn.Linear, soft_rows, soft_ids, soft_lp,
                        hard_rows, hard_targets, scale: float, chunk: int = 512,
                        matmul_dtype=torch.bfloat16) -> tuple[torch.Tensor, dict]:
    """Sum of the per-row losses of the soft and hard rows of `hidden` [B, T, h], times `scale`
    (e.g. 1 / rows in the step), differentiated chunk by chunk with `fused_vocab_grad`.

    Returns (dL/dhidden [B, T, h], stats); pass the gradient on with hidden.backward(grad).
    WARNING: accumulates into lm_head.weight.grad.
    """
    weight = lm_head.weight.detach()
    w_mm = weight.to(matmul_dtype)
    grad_h = torch.zeros_like(hidden, dtype=torch.float32)
    grad_w = torch.zeros_like(weight, dtype=torch.float32)
    stats = {"soft_kl_sum": 0.0, "hard_ce_sum": 0.0, "agree_sum": 0, "rows": 0}
    flat = hidden.detach()
    for rows, kind in ((soft_rows, "soft"), (hard_rows, "hard")):
        for c in range(0, len(rows), chunk):
            r = rows[c:c + chunk]
            h = flat[r[:, 0], r[:, 1]]  # [m, h]
            if kind == "soft":
                loss, g, argmax = fused_vocab_grad(h, w_mm, soft_ids[c:c + chunk], soft_lp[c:c + chunk],
                                                   matmul_dtype=matmul_dtype)
                top1 = soft_ids[c:c + chunk, 0]
                stats["soft_kl_sum"] += float(loss.sum())
            else:
                top1 = hard_targets[c:c + chunk]
                loss, g, argmax = fused_vocab_grad(h, w_mm, targets=top1, matmul_dtype=matmul_dtype)
                stats["hard_ce_sum"] += float(loss.sum())
            stats["agree_sum"] += int((argmax == top1).sum())
            stats["rows"] += len(r)
            g_mm = g.mul_(scale).to(matmul_dtype)  # [m, V]
            grad_h[r[:, 0], r[:, 1]] += (g_mm @ w_mm).float()
            grad_w += (g_mm.T @ h.to(matmul_dtype)).float()
    if lm_head.weight.grad is None:
        lm_head.weight.grad = grad_w
    else:
        lm_head.weight.grad += grad_w
    return grad_h, stats
