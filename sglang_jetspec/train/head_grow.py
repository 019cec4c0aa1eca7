"""Grow a trained head by extra decoder layers, or extra target taps, without changing what it drafts.

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


@torch.no_grad()
def widen_taps(head: DraftHead, target_layer_ids: list[int]) -> DraftHead:
    """A new head that reads the target layers ``target_layer_ids`` (a superset of the head's
    taps, in any order) and drafts what ``head`` drafts: ``fc``'s column block of each
    old tap moves to that tap's place in the new list and the new taps' blocks start at zero, so
    fc's output, and everything after it, is unchanged (to rounding: the matrix product sums the
    same terms, plus zeros, in another order) until training gives the new taps weight.
    ``head`` itself is not modified."""
    old, new = list(head.config.target_layer_ids), [int(i) for i in target_layer_ids]
    if len(set(new)) != len(new):
        raise ValueError(f"target_layer_ids {new} repeats a layer")
    if not set(old) < set(new):
        raise ValueError(f"target_layer_ids {new} must hold every current tap {old} and at least one more "
                         "(widening only adds taps)")
    n_layers = head.config.num_target_layers
    bad = [i for i in new if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"target_layer_ids {bad} outside the target's layers 0..{n_layers - 1}")
    cfg = copy.deepcopy(head.config)
    cfg.target_layer_ids = new
    wide = DraftHead(cfg).to(next(head.parameters()).dtype)
    state = {k: v for k, v in head.state_dict().items() if k != "fc.weight"}
    wide.load_state_dict(state, strict=False)
    d = head.config.target_hidden_size
    w = torch.zeros_like(wide.fc.weight)  # [hidden, K_new * d]
    for j, layer in enumerate(old):
        k = new.index(layer)
        w[:, k * d:(k + 1) * d] = head.fc.weight[:, j * d:(j + 1) * d]
    wide.fc.weight.copy_(w)
    wide.draft_vocab = head.draft_vocab
    return wide.train(head.training)
