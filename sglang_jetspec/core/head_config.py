"""Configuration of the JetSpec draft head, in the published checkpoint's config.json format.

The published heads ship a Hugging Face Qwen3Config dict plus `block_size`, `num_target_layers`
and a `dflash_config` sub-dict. This dataclass is the one source of truth for that format: it
parses the fields the head needs, keeps every other field in `extra` untouched, and writes them
back, so load -> save round-trips a checkpoint's config.json exactly.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field

CONFIG_NAME = "config.json"

# Top-level Qwen3Config keys this dataclass owns (everything else goes to `extra`).
_REQUIRED = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "vocab_size", "block_size", "num_target_layers",
)
_OPTIONAL = {  # key -> default when the checkpoint omits it (Qwen3Config defaults)
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 32768,
    "attention_bias": False,
}
_ROPE_DICTS = ("rope_parameters", "rope_scaling")  # newer transformers nest rope_theta here
_DFLASH_KEYS = ("causal_head", "target_layer_ids", "mask_token_id", "target_hidden_size")


def default_target_layer_ids(num_target_layers: int, num_ids: int) -> list[int]:
    """Target layers to tap when a checkpoint names none: evenly spaced from 1 to L-3.

    This is the published rule (one id: the middle layer), so heads trained without explicit
    ids still read the layers they were trained on.
    """
    if num_ids < 1:
        raise ValueError(f"number of target layer ids {num_ids} must be >= 1")
    if num_ids == 1:
        return [num_target_layers // 2]
    start, end = 1, num_target_layers - 3
    return [int(round(start + i * (end - start) / (num_ids - 1))) for i in range(num_ids)]


@dataclass
class HeadConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    block_size: int
    num_target_layers: int
    target_layer_ids: list[int]
    rope_theta: float
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    attention_bias: bool = False
    mask_token_id: int | None = None
    causal_head: bool = True
    target_hidden_size: int | None = None  # None -> hidden_size
    extra: dict = field(default_factory=dict)  # every other config.json field, preserved

    def __post_init__(self):
        if self.target_hidden_size is None:
            self.target_hidden_size = self.hidden_size
        self.target_layer_ids = [int(i) for i in self.target_layer_ids]

    @property
    def num_target_features(self) -> int:
        """Width of the concatenated target hidden states fed to `fc` (K * d_target)."""
        return len(self.target_layer_ids) * self.target_hidden_size

    # ---- parsing -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict) -> "HeadConfig":
        """Parse a config.json dict; raises ValueError naming any missing or invalid field."""
        extra = copy.deepcopy(d)
        missing = [k for k in _REQUIRED if k not in extra]
        if missing:
            raise ValueError(f"draft head config is missing required field(s) {missing}")
        kw = {k: extra.pop(k) for k in _REQUIRED}
        for k, default in _OPTIONAL.items():
            kw[k] = extra.pop(k, default)
        head_dim = extra.pop("head_dim", None)
        kw["head_dim"] = head_dim if head_dim is not None else kw["hidden_size"] // kw["num_attention_heads"]
        kw["rope_theta"] = _pop_rope_theta(extra)

        dflash = extra.pop("dflash_config", None) or {}
        if not isinstance(dflash, dict):
            raise ValueError(f"dflash_config must be a dict, got {type(dflash).__name__}")
        dflash = dict(dflash)
        ids = dflash.pop("target_layer_ids", None)
        if ids is None:
            ids = default_target_layer_ids(kw["num_target_layers"], kw["num_hidden_layers"])
        kw["target_layer_ids"] = list(ids)
        kw["causal_head"] = bool(dflash.pop("causal_head", False))  # published default: DFlash
        kw["mask_token_id"] = dflash.pop("mask_token_id", None)
        kw["target_hidden_size"] = dflash.pop("target_hidden_size", None)
        if dflash:
            extra["dflash_config"] = dflash  # unknown dflash fields, merged back by to_dict
        cfg = cls(**kw, extra=extra)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, folder: str) -> "HeadConfig":
        path = os.path.join(folder, CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"draft head folder {folder!r} has no {CONFIG_NAME}")
        with open(path) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: invalid JSON ({e})") from e
        return cls.from_dict(d)

    # ---- writing -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The config.json dict: `extra` plus the owned fields written where they came from."""
        d = copy.deepcopy(self.extra)
        for k in _REQUIRED + tuple(_OPTIONAL) + ("head_dim",):
            d[k] = getattr(self, k)
        nested = False
        for key in _ROPE_DICTS:  # keep rope_theta where the checkpoint keeps it
            if isinstance(d.get(key), dict) and "rope_theta" in d[key]:
                d[key]["rope_theta"] = self.rope_theta
                nested = True
        if not nested or "rope_theta" in d:
            d["rope_theta"] = self.rope_theta
        dflash = dict(d.get("dflash_config") or {})
        dflash["causal_head"] = self.causal_head
        dflash["target_layer_ids"] = list(self.target_layer_ids)
        if self.mask_token_id is not None:
            dflash["mask_token_id"] = self.mask_token_id
        if self.target_hidden_size != self.hidden_size:
            dflash["target_hidden_size"] = self.target_hidden_size
        d["dflash_config"] = dflash
        return d

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, CONFIG_NAME), "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    # ---- checks --------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise one ValueError listing every inconsistency (so a bad config is fixed in one go)."""
        errs = []
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "vocab_size", "num_target_layers",
                  "target_hidden_size", "max_position_embeddings"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                errs.append(f"{k} {v!r} must be an integer >= 1")
        if errs:  # the checks below assume positive integers
            raise ValueError("invalid draft head config: " + "; ".join(errs))
        if self.num_attention_heads % self.num_key_value_heads:
            errs.append(f"num_attention_heads {self.num_attention_heads} must be a multiple of "
                        f"num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim % 2:
            errs.append(f"head_dim {self.head_dim} must be even (rotary rotates half-dims)")
        if not isinstance(self.block_size, int) or self.block_size < 2:
            errs.append(f"block_size {self.block_size!r} must be >= 2 (anchor + at least one mask)")
        if not self.target_layer_ids:
            errs.append("target_layer_ids must name at least one target layer")
        bad = [i for i in self.target_layer_ids if not 0 <= i < self.num_target_layers]
        if bad:
            errs.append(f"target layer id(s) {bad} out of range [0, {self.num_target_layers})")
        if self.mask_token_id is not None and not 0 <= self.mask_token_id < self.vocab_size:
            errs.append(f"mask_token_id {self.mask_token_id} out of range [0, {self.vocab_size})")
        if not self.rms_norm_eps > 0:
            errs.append(f"rms_norm_eps {self.rms_norm_eps} must be > 0")
        if not self.rope_theta > 0:
            errs.append(f"rope_theta {self.rope_theta} must be > 0")
        act = self.extra.get("hidden_act", "silu")
        if act != "silu":
            errs.append(f"hidden_act {act!r} is not supported (expected 'silu')")
        if self.extra.get("use_sliding_window"):
            errs.append("use_sliding_window=true is not supported (the head uses full attention)")
        types = self.extra.get("layer_types")
        if types is not None:
            if len(types) != self.num_hidden_layers:
                errs.append(f"layer_types has {len(types)} entries, expected num_hidden_layers "
                            f"{self.num_hidden_layers}")
            if any(t != "full_attention" for t in types):
                errs.append(f"layer_types {sorted(set(types))} unsupported (expected 'full_attention')")
        if errs:
            raise ValueError("invalid draft head config: " + "; ".join(errs))

    def check_target(self, hidden_size: int, num_layers: int, vocab_size: int) -> None:
        """Raise ValueError naming every way this head does not fit the given target model."""
        errs = []
        if self.target_hidden_size != hidden_size:
            errs.append(f"draft head target_hidden_size {self.target_hidden_size} does not match "
                        f"target hidden_size {hidden_size}")
        if self.num_target_layers != num_layers:
            errs.append(f"draft head num_target_layers {self.num_target_layers} does not match "
                        f"target num_hidden_layers {num_layers}")
        if max(self.target_layer_ids) >= num_layers:
            errs.append(f"draft head target_layer_ids {self.target_layer_ids} exceed target "
                        f"depth {num_layers}")
        if self.vocab_size != vocab_size:
            errs.append(f"draft head vocab_size {self.vocab_size} does not match target "
                        f"vocab_size {vocab_size}")
        if self.mask_token_id is not None and self.mask_token_id >= vocab_size:
            errs.append(f"mask_token_id {self.mask_token_id} outside target vocab_size {vocab_size}")
        if errs:
            raise ValueError("; ".join(errs))

    # ---- construction for training -------------------------------------------------------

    @classmethod
    def for_target(
        cls,
        target_hidden_size: int,
        target_num_layers: int,
        vocab_size: int,
        num_layers: int = 5,
        hidden_size: int | None = None,
        num_attention_heads: int | None = None,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        intermediate_size: int | None = None,
        target_layer_ids: list[int] | None = None,
        num_target_ids: int | None = None,
        block_size: int = 16,
        causal_head: bool = True,
        mask_token_id: int | None = None,
        rope_theta: float = 1_000_000.0,
        rms_norm_eps: float = 1e-6,
        max_position_embeddings: int = 40960,
    ) -> "HeadConfig":
        """A fresh head config for training against a target, with published-style defaults.

        Defaults follow the published Qwen3-8B head: hidden = target hidden, head_dim 128
        (smaller when the width is small), kv heads = q heads / 4, MLP = 3 x hidden, and
        num_layers evenly spaced target layers (or `num_target_ids` of them).
        """
        d = hidden_size or target_hidden_size
        if num_attention_heads is None:
            hd = head_dim or (128 if d % 128 == 0 else 64 if d % 64 == 0 else d)
            num_attention_heads = max(1, d // hd)
        head_dim = head_dim or d // num_attention_heads
        if num_key_value_heads is None:
            num_key_value_heads = max(1, num_attention_heads // 4)
            while num_attention_heads % num_key_value_heads:
                num_key_value_heads -= 1
        if target_layer_ids is None:
            target_layer_ids = default_target_layer_ids(target_num_layers, num_target_ids or num_layers)
        extra = {
            "architectures": ["DFlashDraftModel"],
            "model_type": "qwen3",
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "attention_dropout": 0.0,
            "layer_types": ["full_attention"] * num_layers,
            "torch_dtype": "bfloat16",
        }
        cfg = cls(
            hidden_size=d, intermediate_size=intermediate_size or 3 * d, num_hidden_layers=num_layers,
            num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads,
            head_dim=head_dim, vocab_size=vocab_size, block_size=block_size,
            num_target_layers=target_num_layers, target_layer_ids=list(target_layer_ids),
            rope_theta=rope_theta, rms_norm_eps=rms_norm_eps,
            max_position_embeddings=max_position_embeddings, mask_token_id=mask_token_id,
            causal_head=causal_head, target_hidden_size=target_hidden_size, extra=extra,
        )
        cfg.validate()
        return cfg


def _pop_rope_theta(extra: dict) -> float:
    """Find rope_theta (top level, or nested in rope_parameters / rope_scaling); reject
    rotary variants the head does not implement."""
    found = {}
    for key in _ROPE_DICTS:
        sub = extra.get(key)
        if isinstance(sub, dict):
            kind = sub.get("rope_type", sub.get("type", "default"))
            if kind not in (None, "default"):
                raise ValueError(f"{key} rope_type {kind!r} is not supported (only default rotary)")
            if "rope_theta" in sub:
                found[key] = sub["rope_theta"]
    if "rope_theta" in extra:
        found["rope_theta"] = extra["rope_theta"]
        if len(found) == 1:  # only top level: the dataclass owns it
            extra.pop("rope_theta")
    if not found:
        raise ValueError("draft head config is missing required field 'rope_theta' "
                         f"(top level or inside {' / '.join(_ROPE_DICTS)})")
    if len(set(float(v) for v in found.values())) > 1:
        raise ValueError(f"conflicting rope_theta values {found}")
    return float(next(iter(found.values())))
