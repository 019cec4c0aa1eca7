"""One JetSpec head forward per round, with the target's embeddings and lm_head.

Same math as DraftHead.forward with a HeadKVCache (see core/head.py), but the context K/V
comes from the slot-indexed HeadContextPool and the block is batched over requests of
different context lengths. Block for a request whose last committed token is the anchor a
at position p (p = tokens already in the target KV):
    tokens    [a, MASK, ..., MASK]   (block_size)
    positions [p, p+1, ..., p+S-1]
and slot i (1 <= i <= depth) scores the token at depth i of the draft tree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sglang_jetspec.core.head import DraftHead, rotary_cos_sin
from sglang_jetspec.core.packed_linear import pack_linears
from sglang_jetspec.core.row_linear import row_linear
from sglang_jetspec.integration.cpu_linear import server_backend


class Drafter:
    def __init__(self, head: DraftHead, embed_weight: torch.Tensor, lm_head_weight: torch.Tensor,
                 vocab_size: int, depth: int):
        cfg = head.config
        if not 1 <= depth <= cfg.block_size - 1:
            raise ValueError(f"depth {depth} must be in [1, block_size - 1 = {cfg.block_size - 1}]")
        if cfg.mask_token_id is None:
            raise ValueError("draft head config has no dflash_config.mask_token_id")
        self.head, self.cfg, self.depth, self.vocab_size = head.eval(), cfg, depth, vocab_size
        packed = lm_head_weight.device.type == "cpu" and server_backend() == "onednn"
        if packed:
            pack_linears(self.head)  # CPU fp32 layers through packed oneDNN products, like the target's
        self.embed_weight = embed_weight  # [V(+pad), d] the target's input embeddings
        self.lm_head_weight = lm_head_weight  # [V(+pad), d] the target's output head
        self.vocab = head.draft_vocab  # None: score the whole vocabulary (core/draft_vocab.py)
        if self.vocab is not None:
            self.vocab.use_packed = packed
        if self.vocab is not None:
            errs = self.vocab.check(vocab_size)
            if errs:
                raise ValueError("; ".join(errs))

    def _rope(self, positions: torch.Tensor, dtype):
        return rotary_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, dtype)

    @torch.no_grad()
    def context_kv(self, features: torch.Tensor, positions: torch.Tensor):
        """Fused target hidden states [t, K*d] at positions [t] -> per-layer (k, v) [t, H_kv, hd]."""
        dtype = self.embed_weight.dtype
        ctx = self.head.project_context(features[None].to(dtype))  # [1, t, d]
        rope = self._rope(positions[None].to(ctx.device), dtype)
        out = []
        for layer in self.head.layers:
            k, v = layer.self_attn.context_kv(ctx, rope)  # [1, t, H_kv, hd]
            out.append((k[0], v[0]))
        return out

    @torch.no_grad()
    def draft_scores(self, anchors: torch.Tensor, anchor_pos: torch.Tensor,
                     ctx_kv: list[tuple[torch.Tensor, torch.Tensor]], ctx_valid: torch.Tensor,
                     rows: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(scores [b, rows, C] fp32 draft log-probs over the scored columns, col_ids [C] or None):
        with a draft vocabulary column j scores token col_ids[j] (C = subset size), without one
        the columns are the target's vocabulary (col_ids None). Both are normalised over their
        columns, so exp(scores) is the draft distribution q (zero outside the columns).
        `top_of(scores, col_ids, k)` is all a tree needs (core/tree.py build_tree_from_top): with
        a draft vocabulary no full-vocabulary tensor is made."""
        h = self._rows_hidden(anchors, anchor_pos, ctx_kv, ctx_valid, rows)
        if self.vocab is None:
            return self._full_logprobs(h), None
        return self.vocab.subset_logprobs(h, self.lm_head_weight), self.vocab.ids_on(h.device)

    @torch.no_grad()
    def draft_logprobs(self, anchors: torch.Tensor, anchor_pos: torch.Tensor,
                       ctx_kv: list[tuple[torch.Tensor, torch.Tensor]],
                       ctx_valid: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """Per-depth draft log-probs [b, rows, V] (fp32), rows = depths 1..rows (default: all
        `depth`). Fewer rows save the lm_head over the vocabulary for depths no tree of the
        batch can reach, and for a causal head also the block positions after them (a causal
        block's slot i never sees slots > i, so its rows are the same).

        anchors [b] last committed tokens; anchor_pos [b] their positions; ctx_kv per layer
        (k, v) [b, c, H_kv, hd] from HeadContextPool.gather; ctx_valid [b, c] bool.
        """
        h = self._rows_hidden(anchors, anchor_pos, ctx_kv, ctx_valid, rows)
        if self.vocab is not None:  # -inf outside the draft vocabulary
            return self.vocab.logprobs(h, self.lm_head_weight, self.vocab_size)
        return self._full_logprobs(h)

    def _full_logprobs(self, h: torch.Tensor) -> torch.Tensor:
        """Log-probs over the target's whole vocabulary [..., V] fp32 (h may be strided)."""
        return torch.log_softmax(row_linear(h, self.lm_head_weight)[..., : self.vocab_size].float(), dim=-1)

    def _rows_hidden(self, anchors, anchor_pos, ctx_kv, ctx_valid, rows: int | None) -> torch.Tensor:
        """The head's final hidden states of depth rows 1..rows, [b, rows, d] (a strided view)."""
        rows = self.depth if rows is None else rows
        if not 1 <= rows <= self.depth:
            raise ValueError(f"rows {rows} must be in [1, depth = {self.depth}]")
        cfg, device = self.cfg, self.embed_weight.device
        b = anchors.shape[0]
        s = rows + 1 if cfg.causal_head else cfg.block_size
        block = torch.full((b, s), cfg.mask_token_id, dtype=torch.long, device=device)
        block[:, 0] = anchors.to(device)
        h = F.embedding(block, self.embed_weight)  # [b, S, d]
        positions = anchor_pos.to(device).long()[:, None] + torch.arange(s, device=device)
        q_rope = self._rope(positions, h.dtype)
        mask = self._mask(ctx_valid.to(device), s)
        for layer, (k, v) in zip(self.head.layers, ctx_kv):
            h = layer(h, q_rope, k, v, mask)
        return self.head.norm(h)[:, 1: 1 + rows]  # [b, rows, d]

    def _mask(self, ctx_valid: torch.Tensor, s: int) -> torch.Tensor:
        """bool [b, S, c + S]: valid context keys, then the block (causal for causal heads)."""
        b = ctx_valid.shape[0]
        block = torch.ones(s, s, dtype=torch.bool, device=ctx_valid.device)
        if self.cfg.causal_head:
            block = block.tril()
        return torch.cat([ctx_valid[:, None, :].expand(b, s, -1), block.expand(b, s, s)], dim=-1)


def top_of(scores: torch.Tensor, col_ids: torch.Tensor | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best columns of draft scores [..., C] as (log-probs, token ids), each [..., min(k, C)]."""
    if k < 1:
        raise ValueError(f"k {k} must be >= 1")
    vals, idx = scores.topk(min(k, scores.shape[-1]), dim=-1)
    return vals, (idx if col_ids is None else col_ids.to(idx.device)[idx])
