"""Architecture of the embedded MoE target, and its start from SmolLM2's embeddings.

Why these numbers: the checkpoint must stay under 60 MB in bf16 and SGLang's qwen3_moe
model has no tied-embedding path (it always loads its own `lm_head.weight`), so the file
holds two vocab x hidden matrices: 2 * 49152 * 192 * 2 bytes = 37.7 MB. That leaves about
20 MB for the layers: 6 MoE layers of 8 experts (top-2, renormalised like Qwen3-30B-A3B).
Vocabulary, special tokens and chat template are SmolLM2's, so the two share a tokenizer.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@dataclass(frozen=True)
class MoeTargetSpec:
    hidden_size: int = 192
    num_layers: int = 6
    num_experts: int = 8
    top_k: int = 2
    moe_intermediate_size: int = 256
    num_heads: int = 3
    num_kv_heads: int = 1
    head_dim: int = 64
    max_position_embeddings: int = 4096

    def __post_init__(self):
        if self.num_experts < 8:
            raise ValueError(f"num_experts {self.num_experts} must be >= 8 (the issue asks for >= 8 per layer)")
        if not 1 <= self.top_k < self.num_experts:
            raise ValueError(f"top_k {self.top_k} must be in [1, num_experts {self.num_experts})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}")

    def param_count(self, vocab_size: int) -> int:
        h, e, i = self.hidden_size, self.num_experts, self.moe_intermediate_size
        attn = h * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads) + 2 * self.head_dim
        moe = e * 3 * h * i + e * h
        return 2 * vocab_size * h + self.num_layers * (attn + moe + 2 * h) + h


def build_config(spec: MoeTargetSpec, teacher_config):
    """A Qwen3MoeConfig with the teacher's vocabulary, special token ids and rotary base."""
    from transformers import Qwen3MoeConfig

    rope = dict(getattr(teacher_config, "rope_parameters", None) or {"rope_type": "default"})
    rope.setdefault("rope_theta", 100000.0)
    return Qwen3MoeConfig(
        vocab_size=teacher_config.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.moe_intermediate_size * spec.top_k,  # unused: every layer is sparse
        moe_intermediate_size=spec.moe_intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        num_experts=spec.num_experts,
        num_experts_per_tok=spec.top_k,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=1e-6,
        rope_parameters=rope,
        tie_word_embeddings=False,  # SGLang's qwen3_moe reads lm_head.weight from the file
        bos_token_id=teacher_config.bos_token_id,
        eos_token_id=teacher_config.eos_token_id,
        pad_token_id=teacher_config.pad_token_id,
        router_aux_loss_coef=0.0,  # the distillation loop adds its own per-layer balance loss
        architectures=["Qwen3MoeForCausalLM"],
    )


@torch.no_grad()
def pca_embeddings(teacher_embed: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """teacher_embed [V, D] -> [V, hidden_size]: coordinates in its top principal directions.

    Why: the student then starts with the teacher's token geometry (similar tokens close,
    the same logit ranking up to the dropped directions), not from noise. Not centred: the
    shared mean direction carries the teacher's token-frequency prior in the logits.
    Scaled so rows have the teacher's RMS per coordinate.
    """
    emb = teacher_embed.float()
    if not 1 <= hidden_size <= emb.shape[1]:
        raise ValueError(f"hidden_size {hidden_size} must be in [1, teacher hidden {emb.shape[1]}]")
    _, _, vh = torch.linalg.svd(emb, full_matrices=False)  # vh [D, D]
    proj = emb @ vh[:hidden_size].T  # [V, h]
    return proj * (emb.pow(2).mean().sqrt() / proj.pow(2).mean().sqrt())


def init_student(config, teacher_embed: torch.Tensor, seed: int = 0):
    """A Qwen3MoeForCausalLM (fp32): PCA embeddings for both embed_tokens and lm_head, the rest
    at transformers' default init (seeded), except routers: small random instead of zero, so
    top-k picks differ between tokens from step 0 and every expert gets gradient."""
    from transformers import Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(config).float()
    emb = pca_embeddings(teacher_embed, config.hidden_size)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(emb)
        model.lm_head.weight.copy_(emb)
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0.0, config.initializer_range)
    return model


def copy_tokenizer(teacher_dir: str | Path, out_dir: str | Path) -> None:
    """SmolLM2's tokenizer, special tokens and chat template, byte for byte."""
    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    for name in TOKENIZER_FILES:
        src = teacher_dir / name
        if not src.exists():
            raise FileNotFoundError(f"teacher folder {teacher_dir} lacks {name}")
        shutil.copyfile(src, out_dir / name)
