"""The draft head's context K/V, stored per TARGET KV slot.

Why per slot: SGLang skips prefill for a prefix found in its radix cache, so the target's
hidden states for those tokens are never recomputed. If the head kept its context in a
private per-request cache, every cache hit would leave the head blind to the prefix. Here
the row of a token is the token's slot in the target KV pool (`req_to_token[req, pos]`),
written in the same round as the target's own KV; whatever keeps the target KV of a prefix
alive (radix cache, chunked prefill) keeps the head's context of it alive too, and a freed
slot is overwritten by its next owner's forward before anyone reads it.

Rows hold keys after k_norm and rotary at the token's absolute position (positions never
change once a token is committed), exactly what HeadKVCache keeps per request.
"""

from __future__ import annotations

import torch


class HeadContextPool:
    def __init__(self, num_layers: int, num_slots: int, num_kv_heads: int, head_dim: int,
                 device, dtype: torch.dtype):
        shape = (num_layers, num_slots, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # [L, slots, H_kv, hd]
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    @property
    def num_slots(self) -> int:
        return self.k.shape[1]

    @staticmethod
    def bytes_per_slot(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """Bytes the pool holds per target KV slot: K and V of every head layer (what hooks.py
        adds to SGLang's per-token cell size before it sizes the KV pool)."""
        for name, v in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} {v!r} must be an int >= 1")
        return 2 * num_layers * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    def nbytes(self) -> int:
        layers, slots, kv_heads, head_dim = self.k.shape
        return slots * self.bytes_per_slot(layers, kv_heads, head_dim, self.k.dtype)

    def write(self, slots: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Store per-layer k, v [t, H_kv, hd] of t tokens at their target slots [t].

        WARNING: mutates the pool.
        """
        if len(kv) != self.k.shape[0]:
            raise ValueError(f"got K/V for {len(kv)} layers, the pool has {self.k.shape[0]}")
        slots = slots.long()
        for layer, (k, v) in enumerate(kv):
            self.k[layer, slots] = k.to(self.k.dtype)
            self.v[layer, slots] = v.to(self.v.dtype)

    def gather(self, slot_table: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer k, v [b, c, H_kv, hd] for slot_table [b, c] (padding rows: any valid slot)."""
        idx = slot_table.long()
        return [(self.k[layer][idx], self.v[layer][idx]) for layer in range(self.k.shape[0])]


def context_slot_table(req_to_token: torch.Tensor, req_pool_indices: torch.Tensor,
                       lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots of each request's first lengths[i] tokens, padded: ([b, c] slots, [b, c] valid).

    Padding points at slot 0 (SGLang's reserved dummy slot) and is masked by `valid`.
    """
    b, c = len(lengths), max(lengths) if lengths else 0
    device = req_to_token.device
    lens = torch.tensor(lengths, device=device)
    cols = torch.arange(c, device=device)
    valid = cols[None, :] < lens[:, None]  # [b, c]
    rows = req_to_token[req_pool_indices.long()][:, :c]  # [b, c]
    return torch.where(valid, rows, torch.zeros_like(rows)), valid
