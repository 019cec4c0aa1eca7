"""The target model seen through Hugging Face transformers, as the reference decoder needs it.

Three operations: a forward over new tokens on top of a KV cache that also returns the fused
hidden states of the head's target layers, a tree forward under a 4D ancestor mask, and
compaction of the cache to the accepted path. Target layer ``L`` means the OUTPUT of decoder
layer ``L`` (transformers' ``hidden_states[L + 1]``; index 0 is the embedding output), the same
convention SGLang's hidden-state capture uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sglang_jetspec.core.packed_linear import PackedWeight, cpu_linear_backend, pack_linears, packed_linear
from sglang_jetspec.core.row_linear import row_linear
from sglang_jetspec.reference.attention import use_gqa_sdpa


@dataclass
class TargetStep:
    hidden: torch.Tensor          # [s, d] final (normed) hidden states: lm_head input
    logits: torch.Tensor | None   # [s, V] fp32, None when the forward was asked for none
    features: torch.Tensor        # [s, K * d] fused target-layer hidden states (K = len(layer_ids))


class HFTarget:
    """A causal LM from a Hugging Face folder, batch size 1, with its own KV cache."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 linear_backend: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
        self._init(model, AutoTokenizer.from_pretrained(model_dir), Path(model_dir), dtype, linear_backend)

    @classmethod
    def from_model(cls, model, tokenizer=None, dtype: torch.dtype = torch.float32,
                   linear_backend: str | None = None) -> "HFTarget":
        """Wrap an already built model (tests use tiny random ones)."""
        self = cls.__new__(cls)
        self._init(model.eval(), tokenizer, Path("."), dtype, linear_backend)
        return self

    def _init(self, model, tokenizer, model_dir: Path, dtype: torch.dtype, linear_backend: str | None) -> None:
        self.model, self.tokenizer, self.model_dir = model, tokenizer, model_dir
        self.device = next(model.parameters()).device
        cfg = self.model.config
        self.num_layers: int = cfg.num_hidden_layers
        self.hidden_size: int = cfg.hidden_size
        self.vocab_size: int = self.model.get_output_embeddings().weight.shape[0]
        self.dtype = dtype
        # CPU fp32: the decoder's linear layers and the lm_head through packed oneDNN products
        # (core/packed_linear.py: plain decoding and tree verifies both at memory bandwidth).
        # Any other device or dtype keeps torch's own linear; the name says which ran.
        self._head_packed: PackedWeight | None = None
        self.linear_backend = "torch"
        if self.device.type == "cpu" and dtype == torch.float32 and cpu_linear_backend(linear_backend) == "onednn":
            pack_linears(self.model.model)
            head = self.model.get_output_embeddings()
            self._head_packed = PackedWeight(head.weight)
            self.linear_backend = "onednn"
        # CPU: tree verifies (masked) attend with the KV heads grouped, not repeated (attention.py)
        self.attention = "sdpa-gqa" if self.device.type == "cpu" and use_gqa_sdpa(self.model) else \
            self.model.config._attn_implementation

    # ---- pieces the draft head borrows -------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.model.get_output_embeddings()
        if self._head_packed is not None:
            out = packed_linear(hidden, self._head_packed, weight=head.weight)
        else:
            out = row_linear(hidden, head.weight)  # few rows: core/row_linear.py
        return (out if head.bias is None else out + head.bias).float()

    def lm_head_weight(self) -> torch.Tensor:
        """The output head's weight [V, d] (a draft vocabulary scores a subset of its rows)."""
        head = self.model.get_output_embeddings()
        if head.bias is not None:
            raise ValueError("a draft vocabulary needs an output head without bias")
        return head.weight

    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        tok_eos = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        for src in (self.model.generation_config.eos_token_id, tok_eos):
            if src is None:
                continue
            ids.update([src] if isinstance(src, int) else list(src))
        return ids

    # ---- forwards ------------------------------------------------------------------------
    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, cache, start_pos: int, layer_ids: list[int] | None = None,
                tree_mask: torch.Tensor | None = None, depths: torch.Tensor | None = None,
                logits: bool = True) -> TargetStep:
        """Run ``ids`` ([s] long) on top of ``cache`` (which holds ``start_pos`` tokens).

        Without ``tree_mask`` the tokens are a causal continuation at positions start_pos + i.
        With ``tree_mask`` ([s, s] bool, ancestor-or-self) and ``depths`` they are tree nodes at
        positions start_pos + depth that see the whole prefix plus their own ancestors.
        """
        s = ids.shape[0]
        if tree_mask is None:
            positions = start_pos + torch.arange(s, device=self.device)
            attn = None
        else:
            positions = start_pos + depths.to(self.device)
            allowed = torch.cat(
                [torch.ones(s, start_pos, dtype=torch.bool, device=self.device), tree_mask.to(self.device)], dim=1
            )
            attn = torch.zeros(1, 1, s, start_pos + s, dtype=self.dtype, device=self.device)
            attn.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        out = self.model.model(
            input_ids=ids.view(1, s).to(self.device),
            position_ids=positions.view(1, s),
            attention_mask=attn,
            past_key_values=cache,
            use_cache=True,
            output_hidden_states=layer_ids is not None,
        )
        hidden = out.last_hidden_state[0]
        if layer_ids is None:
            feats = torch.empty(s, 0, device=self.device)
        else:
            feats = torch.cat([out.hidden_states[l + 1][0] for l in layer_ids], dim=-1)
        return TargetStep(hidden=hidden, logits=self.lm_head(hidden) if logits else None, features=feats)


def keep_cache_rows(cache, prefix_len: int, keep: torch.Tensor) -> None:
    """WARNING: in place. Keep the first ``prefix_len`` cached tokens plus rows ``prefix_len + keep``
    (the accepted path of a verified tree, in order); drop the rest of the tree's entries.
    Only the tree's rows move: the accepted ones are gathered to the front of the tree's slots
    and the cache is cut after them (a view; the prefix is not copied)."""
    keep = keep.cpu()
    if keep.numel() and (keep.min() < 0 or keep.dim() != 1):
        raise ValueError(f"keep must be 1-D non-negative tree rows, got {keep.tolist()}")
    k = keep.numel()
    for layer in cache.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)
            if prefix_len + (int(keep.max()) + 1 if k else 0) > t.shape[2]:
                raise ValueError(f"keep rows {keep.tolist()} beyond the {t.shape[2] - prefix_len} cached tree rows")
            rows = t.index_select(2, (prefix_len + keep).to(t.device))  # a copy: safe to write back
            t[:, :, prefix_len : prefix_len + k] = rows
            setattr(layer, name, t[:, :, : prefix_len + k])
