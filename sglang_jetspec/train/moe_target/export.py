"""Write the MoE target as an ordinary Hugging Face folder (bf16 safetensors + tokenizer).

bf16 halves the file (fp32 would not fit the 60 MB budget); SGLang and transformers both
upcast on load with an fp32 dtype, so every number reported for the checkpoint is measured
on the bf16-rounded weights (`round_to_bf16`), never on the fp32 training copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from sglang_jetspec.train.moe_target.config import copy_tokenizer

MAX_CHECKPOINT_BYTES = 60 * 10**6


@torch.no_grad()
def round_to_bf16(model) -> None:
    """In place: every parameter becomes its bf16 value (kept in fp32). WARNING: mutates model."""
    for p in model.parameters():
        p.copy_(p.to(torch.bfloat16).float())


def export_checkpoint(model, teacher_dir: str | Path, out_dir: str | Path) -> Path:
    """Save `model` (any dtype) as bf16 + SmolLM2's tokenizer into out_dir (replaced atomically)."""
    from transformers import GenerationConfig

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bf16 = model.to(torch.bfloat16)
    try:
        bf16.config.dtype = "bfloat16"
        bf16.generation_config = GenerationConfig(
            bos_token_id=model.config.bos_token_id, eos_token_id=model.config.eos_token_id,
            pad_token_id=model.config.pad_token_id)
        bf16.save_pretrained(tmp, safe_serialization=True)
    finally:
        model.float()
    copy_tokenizer(teacher_dir, tmp)
    size = (tmp / "model.safetensors").stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ValueError(f"checkpoint is {size / 1e6:.1f} MB; the budget is {MAX_CHECKPOINT_BYTES / 1e6:.0f} MB")
    if out_dir.exists():
        # keep files others put there (README.md), replace the model files
        for f in tmp.iterdir():
            shutil.move(str(f), out_dir / f.name)
        tmp.rmdir()
    else:
        tmp.rename(out_dir)
    return out_dir
