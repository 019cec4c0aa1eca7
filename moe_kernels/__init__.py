"""Triton kernels for the MoE side of JetSpec verification (each with a pure-torch reference).

expert_union  per-layer expert unions, EP rank loads and marginal new experts for a batch of draft
              trees, on device (references: sglang_jetspec.core.expert_load)
verify_moe    a verify-shaped MoE forward (few tokens, top-k over many experts) in SGLang's
              w13 [E, 2I, H] / w2 [E, H, I] layout, with a torch reference and a grouped_mm path

Kernels run on CUDA tensors or under TRITON_INTERPRET=1 (set before this package is imported);
otherwise the wrappers fall back to the torch references.
"""

from .expert_union import expert_load, marginal_new_experts, use_triton
from .verify_moe import align_pairs, fused_verify_moe, moe_forward_grouped_mm, moe_forward_reference

__all__ = [
    "align_pairs",
    "expert_load",
    "fused_verify_moe",
    "marginal_new_experts",
    "moe_forward_grouped_mm",
    "moe_forward_reference",
    "use_triton",
]
