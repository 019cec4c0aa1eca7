"""The JetSpec draft head in pure torch, with the published checkpoint's module layout.

A few Qwen3-style decoder layers run over one block [anchor, MASK, ...]. The target's hidden
states (K tapped layers, concatenated) are projected once (`fc` + `hidden_norm`) into context
features; every layer turns them into extra keys/values (prepended, never updated by the layers),
so the block's queries read the verified prefix through the target's own representations.
Module names match the safetensors keys of the published heads (see checkpoint.py).

Key layout of one forward (per layer):   keys = [cache | ctx | block]
  - cache: context keys/values of earlier rounds (HeadKVCache), already normed and rotated;
  - ctx:   this call's new context features (appended to the cache when one is given);
  - block: the block's own keys, never cached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .head_config import HeadConfig


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back, as Qwen3 does (bf16 variance is too coarse)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin tables [..., head_dim] for integer positions (rotate_half convention).

    Computed in fp32 from the positions every call (no buffer: a bf16 cast of the
    frequencies would shift long positions, and the checkpoint holds no rotary state).
    """
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device,
                                       dtype=torch.float32) / head_dim)  # [hd/2]
    ang = positions.float()[..., None] * inv_freq  # [..., hd/2]
    ang = torch.cat([ang, ang], dim=-1)  # [..., hd]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [b, n, H, hd] rotated by cos/sin [b, n, hd]: pairs (j, j + hd/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    return x * cos[:, :, None, :] + rot * sin[:, :, None, :]


class HeadKVCache:
    """Per-layer keys/values of the context features, for decoding round after round.

    Storage per layer: [b, capacity, H_kv, hd], rows filled up to `lengths[row]`. Keys are
    stored after k_norm and rotary (positions are absolute, so they never need redoing).
    Only context keys live here; block keys are recomputed every forward.

    Limits: rows may hold different lengths (new context is written at each row's own
    offset, padding past `ctx_lens` is ignored), but attention then runs over the longest
    row with shorter rows masked, which wastes work for very uneven batches. Capacity
    grows by reallocation; preallocate `capacity` for CUDA graphs.
    """

    def __init__(self, config: HeadConfig, batch_size: int, capacity: int = 256,
                 device=None, dtype=torch.float32):
        shape = (batch_size, capacity, config.num_key_value_heads, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # [b]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[1]

    def max_length(self) -> int:
        return int(self.lengths.max()) if self.lengths.numel() else 0  # host sync

    def _ensure(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        new_cap = max(needed, 2 * self.capacity)
        for store in (self.k, self.v):
            for i, t in enumerate(store):
                grown = t.new_zeros((t.shape[0], new_cap) + t.shape[2:])
                grown[:, : t.shape[1]] = t
                store[i] = grown

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write new context k/v [b, t, H_kv, hd] at each row's current end (not yet committed).

        WARNING: mutates the cache in place; call `advance` once after the last layer.
        """
        b, t = k.shape[:2]
        self._ensure(self.max_length() + t)
        if t == 0:
            return
        rows = torch.arange(b, device=k.device)[:, None]  # [b, 1]
        idx = self.lengths[:, None] + torch.arange(t, device=k.device)  # [b, t]
        self.k[layer][rows, idx] = k.to(self.k[layer].dtype)
        self.v[layer][rows, idx] = v.to(self.v[layer].dtype)

    def advance(self, n_new: torch.Tensor | int) -> None:
        """Commit n_new (int or [b]) written entries per row."""
        self.lengths += n_new

    def read(self, layer: int, upto: int):
        """k, v [b, upto, H_kv, hd] (entries past a row's length are stale; mask them)."""
        return self.k[layer][:, :upto], self.v[layer][:, :upto]

    def crop(self, lengths: torch.Tensor | int) -> None:
        """Shrink rows to at most `lengths` (int or [b]); e.g. drop context of a rolled-back step."""
        self.lengths = torch.minimum(self.lengths, torch.as_tensor(lengths, device=self.lengths.device))

    def reset(self, rows: torch.Tensor | list[int] | None = None) -> None:
        """Empty the given rows (all rows when None), e.g. when a batch slot gets a new request."""
        if rows is None:
            self.lengths.zero_()
        else:
            self.lengths[torch.as_tensor(rows, device=self.lengths.device)] = 0


class HeadAttention(nn.Module):
    def __init__(self, c: HeadConfig):
        super().__init__()
        self.hq, self.hkv, self.hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        bias = c.attention_bias
        self.q_proj = nn.Linear(c.hidden_size, self.hq * self.hd, bias=bias)
        self.k_proj = nn.Linear(c.hidden_size, self.hkv * self.hd, bias=bias)
        self.v_proj = nn.Linear(c.hidden_size, self.hkv * self.hd, bias=bias)
        self.o_proj = nn.Linear(self.hq * self.hd, c.hidden_size, bias=bias)
        self.q_norm = RMSNorm(self.hd, c.rms_norm_eps)
        self.k_norm = RMSNorm(self.hd, c.rms_norm_eps)

    def context_kv(self, ctx, rope):
        """Context features [b, t, d] -> normed, rotated k and v [b, t, H_kv, hd]."""
        b, t, _ = ctx.shape
        k = self.k_norm(self.k_proj(ctx).view(b, t, self.hkv, self.hd))
        return apply_rotary(k, *rope), self.v_proj(ctx).view(b, t, self.hkv, self.hd)

    def forward(self, h, q_rope, k_ctx, v_ctx, mask):
        """h [b, q, d]; k_ctx/v_ctx [b, c, H_kv, hd] (cache + new context); mask bool [b, q, c+q]."""
        b, q, _ = h.shape
        qs = apply_rotary(self.q_norm(self.q_proj(h).view(b, q, self.hq, self.hd)), *q_rope)
        kb = apply_rotary(self.k_norm(self.k_proj(h).view(b, q, self.hkv, self.hd)), *q_rope)
        vb = self.v_proj(h).view(b, q, self.hkv, self.hd)
        k = torch.cat([k_ctx.to(kb.dtype), kb], dim=1).transpose(1, 2)  # [b, H_kv, c+q, hd]
        v = torch.cat([v_ctx.to(vb.dtype), vb], dim=1).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            qs.transpose(1, 2), k, v, attn_mask=None if mask is None else mask[:, None],
            scale=self.hd ** -0.5, enable_gqa=self.hq != self.hkv)  # [b, Hq, q, hd]
        return self.o_proj(out.transpose(1, 2).reshape(b, q, self.hq * self.hd))


class HeadMLP(nn.Module):
    def __init__(self, c: HeadConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class HeadLayer(nn.Module):
    def __init__(self, c: HeadConfig):
        super().__init__()
        self.self_attn = HeadAttention(c)
        self.mlp = HeadMLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, h, q_rope, k_ctx, v_ctx, mask):
        h = h + self.self_attn(self.input_layernorm(h), q_rope, k_ctx, v_ctx, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class DraftHead(nn.Module):
    """One forward drafts a whole block; the caller embeds tokens and applies lm_head
    with the TARGET's weights (the head owns neither)."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        config.validate()
        self.config = config
        d = config.hidden_size
        self.fc = nn.Linear(config.num_target_features, d, bias=False)
        self.hidden_norm = RMSNorm(d, config.rms_norm_eps)
        self.layers = nn.ModuleList(HeadLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(d, config.rms_norm_eps)
        # optional subset of the target's tokens the draft scores (core/draft_vocab.py); not a
        # parameter: load_head sets it from the folder's draft_vocab.safetensors
        self.draft_vocab = None
        # optional n-gram prior the tree builder shapes children with (core/pair_prior.py); set
        # by load_head from the folder's pair_prior.safetensors
        self.pair_prior = None

    def project_context(self, target_hidden: torch.Tensor) -> torch.Tensor:
        """[b, t, K*d_target] concatenated target hidden states -> context features [b, t, d]."""
        if target_hidden.shape[-1] != self.config.num_target_features:
            raise ValueError(
                f"target hidden width {target_hidden.shape[-1]} != {len(self.config.target_layer_ids)}"
                f" tapped layers x target_hidden_size {self.config.target_hidden_size}")
        return self.hidden_norm(self.fc(target_hidden))

    def _rope(self, positions, dtype):
        return rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, dtype)

    def extend_cache(self, ctx, ctx_positions, cache: HeadKVCache, ctx_lens=None) -> None:
        """Append context features [b, t, d] at positions [b, t] to the cache without drafting.

        ctx_lens [b] (optional): rows' valid prefix of ctx; padding past it is not kept.
        WARNING: mutates `cache`.
        """
        rope = self._rope(ctx_positions, ctx.dtype)
        for i, layer in enumerate(self.layers):
            cache.write(i, *layer.self_attn.context_kv(ctx, rope))
        cache.advance(ctx.shape[1] if ctx_lens is None else ctx_lens)

    def forward(self, block_embeds, block_positions, ctx, ctx_positions, attn_mask=None,
                cache: HeadKVCache | None = None, ctx_lens=None) -> torch.Tensor:
        """Draft hidden states [b, q, d] (after the final norm) for block_embeds [b, q, d].

        ctx [b, t, d] are projected context features (project_context) at ctx_positions [b, t].
        attn_mask: bool [b, q, k_total], True = may attend, keys = [cache | ctx | block] with
          k_total = c + q where c = t without a cache, or the longest cache row after appending
          ctx (for equal-length rows: old length + t). With attn_mask None: every valid cache/
          ctx key is visible, and the block is causal (config.causal_head) or full.
        ctx_lens [b] (optional): valid prefix of ctx per row (padding is masked / not cached).
        cache: if given, ctx keys/values are appended to it (WARNING: mutates the cache).
        """
        b, q, _ = block_embeds.shape
        t = ctx.shape[1]
        dtype = block_embeds.dtype
        q_rope = self._rope(block_positions, dtype)
        ctx_rope = self._rope(ctx_positions, dtype)
        ctx_kv = [layer.self_attn.context_kv(ctx, ctx_rope) for layer in self.layers]
        if cache is not None:
            start = cache.lengths.clone()
            n_new = torch.full_like(start, t) if ctx_lens is None else torch.as_tensor(ctx_lens).to(start)
            c = int((start + n_new).max())  # host sync: the key length is data-dependent
            for i, (k, v) in enumerate(ctx_kv):
                cache.write(i, k, v)
            ctx_kv = [cache.read(i, c) for i in range(len(self.layers))]
            cache.advance(n_new)
            key_valid = torch.arange(c, device=start.device) < (start + n_new)[:, None]  # [b, c]
        else:
            c = t
            key_valid = None
            if ctx_lens is not None:
                key_valid = torch.arange(t, device=ctx.device) < torch.as_tensor(ctx_lens, device=ctx.device)[:, None]
        mask = self._mask(attn_mask, key_valid, b, q, c, block_embeds.device)
        h = block_embeds
        for layer, (k, v) in zip(self.layers, ctx_kv):
            h = layer(h, q_rope, k, v, mask)
        return self.norm(h)

    def _mask(self, attn_mask, key_valid, b, q, c, device):
        """Combine the caller's mask (or the default one) with cache/ctx validity: [b, q, c+q]."""
        if attn_mask is not None:
            if attn_mask.shape != (b, q, c + q) or attn_mask.dtype != torch.bool:
                raise ValueError(f"attn_mask {tuple(attn_mask.shape)} {attn_mask.dtype} must be "
                                 f"bool [{b}, {q}, {c + q}] (keys = context {c} + block {q})")
            mask = attn_mask
        elif key_valid is None and not self.config.causal_head:
            return None  # everything visible
        else:
            block = torch.ones(q, q, dtype=torch.bool, device=device)
            if self.config.causal_head:
                block = block.tril()
            mask = torch.cat([torch.ones(q, c, dtype=torch.bool, device=device), block], dim=1)
            mask = mask.expand(b, q, c + q)
        if key_valid is not None:
            pad = torch.ones(b, q, dtype=torch.bool, device=device)
            mask = mask & torch.cat([key_valid, pad], dim=1)[:, None, :]
        return mask


def block_positions(anchors: torch.Tensor, block_size: int) -> torch.Tensor:
    """Positions of the blocks opened at anchors [..., N] -> [..., N*S] (anchor + 0..S-1)."""
    offs = torch.arange(block_size, device=anchors.device)
    return (anchors[..., None] + offs).flatten(-2)


def build_block_attn_mask(ctx_len: int, anchors: torch.Tensor, block_size: int,
                          causal: bool = True) -> torch.Tensor:
    """Training mask for many blocks over one sequence: bool [..., N*S, ctx_len + N*S].

    anchors [..., N]: block j opens at position a_j; its slot i sees context positions < a_j
    and its own slots <= i (causal) or all its own slots (bidirectional), never other blocks.
    Queries and keys of the block part are ordered block by block (j*S + i).
    """
    anchors = torch.as_tensor(anchors)
    n, s = anchors.shape[-1], block_size
    dev = anchors.device
    ctx_vis = torch.arange(ctx_len, device=dev) < anchors[..., :, None]  # [..., N, T]
    ctx_vis = ctx_vis.repeat_interleave(s, dim=-2)  # [..., N*S, T]
    qi = torch.arange(n * s, device=dev)
    same_block = (qi[:, None] // s) == (qi[None, :] // s)  # [N*S, N*S]
    blk_vis = same_block & (qi[None, :] <= qi[:, None]) if causal else same_block
    blk_vis = blk_vis.expand(ctx_vis.shape[:-1] + (n * s,))
    return torch.cat([ctx_vis, blk_vis], dim=-1)
