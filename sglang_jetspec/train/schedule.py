"""AdamW over the head with linear warm-up then cosine decay: the optimiser half of the recipe."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(head: nn.Module, lr: float, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (decaying norm gains toward 0 only hurts)."""
    if not lr > 0:
        raise ValueError(f"learning rate {lr} must be > 0")
    decay = [p for p in head.parameters() if p.requires_grad and p.dim() >= 2]
    keep = [p for p in head.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(step) = base * step/warmup during warm-up, then cosine from base down to base * min_ratio."""
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"total_steps {total_steps} must be >= 1 and warmup_steps {warmup_steps} >= 0")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
