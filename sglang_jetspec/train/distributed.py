"""torch.distributed for head training: one process per device (torchrun), DDP over the head only.

The frozen target is loaded in every process (it is not wrapped); each rank trains on its own
shard of the sequences and DDP averages the head's gradients, so all ranks keep identical
weights. Without torchrun's environment this is a no-op single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group that torchrun (or a test) described in RANK/WORLD_SIZE/MASTER_*."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local)


def device_for(info: DistInfo) -> torch.device:
    return torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    """DDP over `module` (broadcasts rank 0's weights now, averages gradients in backward)."""
    if not info.enabled:
        return module
    dev = next(module.parameters()).device
    ids = [dev.index] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def sum_over_ranks(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a small detached tensor (counts, loss sums) across ranks, for logging."""
    if not info.enabled:
        return x
    y = x.clone()
    dist.all_reduce(y)
    return y


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
