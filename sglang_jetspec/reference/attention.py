"""SDPA attention for the reference target on CPU, with grouped KV heads kept grouped under a mask.

transformers' ``sdpa`` attention repeats the KV heads to the query heads (a copy of the whole
KV cache per layer) whenever an attention mask is passed, because some GPU kernels fall back to
the math path with masked GQA. The reference decoder passes a mask on every tree verify. On CPU,
``F.scaled_dot_product_attention(..., enable_gqa=True)`` takes the mask and gives the same
values without the copy (bit-identical in the tests; SmolLM2-135M, 9 query / 3 KV heads, a
6-node tree over 306 keys, two threads: 72 us a layer instead of 104). Calls without grouped
heads, or with ``output_attentions``, go to transformers' own function unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "jetspec_sdpa_gqa"


def gqa_sdpa_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                               scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if (groups <= 1 or attention_mask is None or kwargs.get("output_attentions", False)
            or kwargs.get("position_bias") is not None or query.device.type != "cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, is_causal=False, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def use_gqa_sdpa(model) -> bool:
    """Switch ``model`` (a transformers model using ``sdpa``) to the function above; False (and
    nothing changed) when it uses another attention implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if model.config._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(NAME, gqa_sdpa_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # masks as for sdpa
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME
