"""Grow a trained head by extra decoder layers without changing what it drafts.

Why: a head trained for thousands of steps cannot be retrained from scratch on a CPU to test
whether more depth helps. Appending layers that start as the identity keeps every trained
weight and lets training decide what the new depth adds: each new layer is a copy of the head's
last layer (working attention and MLP shapes from step 0) with its two residual outputs,
``self_attn.o_proj`` and ``mlp.down_proj``, set to zero, so the residual stream passes through
unchanged and the grown head's drafts equal the original's exactly until its first update.
The published layout is kept (more ``layers.N.*`` keys, ``num_hidden_layers`` and
``layer_types`` updated).
"""

from __future__ import annotations

import copy

import torch

from sglang_jetspec.core.head import DraftHead, HeadLayer


@torch.no_grad()
def grow_head(head: DraftHead, num_layers: int) -> DraftHead:
    """A new head with ``num_layers`` layers: ``head``'s layers, then identity-started copies
    of its last layer. ``head`` itself is not modified."""
    have = head.config.num_hidden_layers
    if num_layers <= have:
        raise ValueError(f"num_layers {num_layers} must exceed the head's {have} layers (growing only adds layers)")
    cfg = copy.deepcopy(head.config)
    cfg.num_hidden_layers = num_layers
    if "layer_types" in cfg.extra:
        cfg.extra["layer_types"] = list(cfg.extra["layer_types"]) + ["full_attention"] * (num_layers - have)
    grown = DraftHead(cfg).to(next(head.parameters()).dtype)
    grown.load_state_dict(head.state_dict(), strict=False)  # the new layers' keys are filled below
    for i in range(have, num_layers):
        layer: HeadLayer = grown.layers[i]
        layer.load_state_dict(head.layers[have - 1].state_dict())
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        if layer.self_attn.o_proj.bias is not None:
            layer.self_attn.o_proj.bias.zero_()
    grown.draft_vocab = head.draft_vocab
    return grown.train(head.training)
