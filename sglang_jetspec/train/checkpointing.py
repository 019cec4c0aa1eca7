"""Training checkpoints: the head in the published layout (what decoders load) plus a trainer
state file (what a resumed run needs: exact fp32 weights, optimiser, scheduler, step, RNG).

The state file carries its own copy of the weights so the pair can never disagree after a kill
between the two writes; files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import random

import torch

from sglang_jetspec.core.checkpoint import save_head
from sglang_jetspec.core.head import DraftHead

STATE_NAME = "trainer_state.pt"


def save_training_state(out_dir: str, head: DraftHead, optimizer, scheduler, step: int,
                        meta: dict | None = None) -> None:
    """Write out_dir/{config.json, model.safetensors} (fp32) and out_dir/trainer_state.pt."""
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, ".tmp_head")
    save_head(head, tmp)
    for name in sorted(os.listdir(tmp)):
        os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    os.rmdir(tmp)
    state = {
        "step": step,
        "head": {k: v.detach().cpu() for k, v in head.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "meta": meta or {},
    }
    path = os.path.join(out_dir, STATE_NAME)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def has_training_state(out_dir: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, STATE_NAME))


def load_training_state(out_dir: str, head: DraftHead, optimizer, scheduler) -> dict:
    """Restore weights, optimiser, scheduler and RNG in place; returns the state (step, meta).

    WARNING: mutates head, optimizer and scheduler.
    """
    path = os.path.join(out_dir, STATE_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cannot resume: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    dev = next(head.parameters()).device
    head.load_state_dict({k: v.to(dev) for k, v in state["head"].items()}, strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return state
