"""Save and load draft heads as Hugging Face folders in the published JetSpec layout.

A folder holds config.json (HeadConfig.to_dict) and model.safetensors, or shards listed in
model.safetensors.index.json. Loading is strict: a head that silently keeps random weights
for a misnamed key would draft garbage with no error, so every key and shape must match.
"""

from __future__ import annotations

import copy
import json
import os

import torch
from safetensors.torch import load_file, save_file

from .head import DraftHead
from .head_config import CONFIG_NAME, HeadConfig

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}  # config name -> dtype
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_DTYPE_KEYS = ("torch_dtype", "dtype")  # where a config.json names its weights' dtype


def expected_shapes(config: HeadConfig) -> dict[str, tuple[int, ...]]:
    """Every safetensors key of a head with this config and its shape (built on the meta device)."""
    with torch.device("meta"):
        head = DraftHead(config)
    return {k: tuple(v.shape) for k, v in head.state_dict().items()}


def save_head(head: DraftHead, folder: str, dtype: torch.dtype | None = None) -> None:
    """Write config.json and model.safetensors; dtype casts the weights (and sets torch_dtype)."""
    os.makedirs(folder, exist_ok=True)
    tensors = {k: v.detach().to(device="cpu", dtype=dtype or v.dtype).contiguous()
               for k, v in head.state_dict().items()}
    save_file(tensors, os.path.join(folder, WEIGHTS_NAME), metadata={"format": "pt"})
    config = head.config
    stored = next(iter(tensors.values())).dtype
    if stored in _DTYPE_NAMES:
        config = copy.deepcopy(config)  # the head's own config stays as is
        keys = [k for k in _DTYPE_KEYS if k in config.extra] or ["torch_dtype"]
        for k in keys:
            config.extra[k] = _DTYPE_NAMES[stored]
    config.save(folder)


def stored_dtype(config: HeadConfig) -> torch.dtype:
    """The weights' dtype a head's config.json names (as save_head writes it); fp32 if none."""
    name = next((config.extra[k] for k in _DTYPE_KEYS if config.extra.get(k)), None)
    return DTYPES.get(name, torch.float32)


def load_head(folder: str, device="cpu", dtype: torch.dtype = torch.float32,
              draft_vocab: bool = True, pair_prior: bool = True) -> DraftHead:
    """Load a head folder strictly: ValueError names missing/unexpected keys and wrong shapes.
    draft_vocab: also load the folder's optional draft vocabulary (core/draft_vocab.py) into
    head.draft_vocab; False drafts over the full vocabulary. pair_prior: likewise the folder's
    optional n-gram prior (core/pair_prior.py) into head.pair_prior; False builds plain trees."""
    config = HeadConfig.load(folder)
    state = _read_weights(folder)
    want = expected_shapes(config)
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    wrong = [f"{k} has {list(state[k].shape)}, expected {list(want[k])}"
             for k in sorted(set(want) & set(state)) if tuple(state[k].shape) != want[k]]
    problems = []
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if missing:
        problems.append(f"missing {missing}")
    if wrong:
        problems.append("wrong shapes: " + ", ".join(wrong))
    if problems:
        raise ValueError(f"head checkpoint {folder}: " + "; ".join(problems))
    with torch.device("meta"):
        head = DraftHead(config)
    head.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()},
                         strict=True, assign=True)
    if draft_vocab:
        from sglang_jetspec.core.draft_vocab import DraftVocab

        head.draft_vocab = DraftVocab.load(folder)
    if pair_prior:
        from sglang_jetspec.core.pair_prior import PairPrior

        head.pair_prior = PairPrior.load(folder)
        errs = [] if head.pair_prior is None else head.pair_prior.check(config.vocab_size)
        if errs:
            raise ValueError(f"head folder {folder}: " + "; ".join(errs))
        if head.pair_prior is not None:
            head.pair_prior.prepare()  # its lookup tables now, not in the first request's tree
    return head.eval()


def weight_problems(folder: str, config: HeadConfig) -> list[str]:
    """What is wrong with the weights of a head folder for `config`, from the safetensors
    headers alone (no tensor is read): missing files, missing/unexpected keys, wrong shapes.
    Empty when the folder would load. Used at server startup, before any model is built."""
    from safetensors import safe_open

    single, index = os.path.join(folder, WEIGHTS_NAME), os.path.join(folder, INDEX_NAME)
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        try:
            with open(index) as f:
                files = [os.path.join(folder, s) for s in sorted(set(json.load(f)["weight_map"].values()))]
        except (OSError, ValueError, KeyError, AttributeError) as e:
            return [f"{INDEX_NAME} is unreadable ({e})"]
        absent = [os.path.basename(p) for p in files if not os.path.isfile(p)]
        if absent:
            return [f"weight shards {absent} listed in {INDEX_NAME} are missing"]
    else:
        return [f"no weights: neither {WEIGHTS_NAME} nor {INDEX_NAME} in the folder"]
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        try:
            with safe_open(path, framework="pt") as f:
                for k in f.keys():
                    shapes[k] = tuple(f.get_slice(k).get_shape())
        except Exception as e:  # a truncated or foreign file: name it, whatever the parser raised
            return [f"weights file {os.path.basename(path)} is not readable safetensors ({e})"]
    want = expected_shapes(config)
    errs = []
    missing, unexpected = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
    if missing:
        errs.append(f"weights miss {len(missing)} tensors, e.g. {missing[:3]}")
    if unexpected:
        errs.append(f"weights have {len(unexpected)} unexpected tensors, e.g. {unexpected[:3]}")
    wrong = [f"{k} is {list(shapes[k])}, config needs {list(want[k])}"
             for k in sorted(set(want) & set(shapes)) if shapes[k] != want[k]]
    if wrong:
        errs.append("weights do not fit the config: " + "; ".join(wrong[:3]))
    return errs


def _read_weights(folder: str) -> dict[str, torch.Tensor]:
    """All tensors of a single-file or sharded safetensors checkpoint (on CPU)."""
    single = os.path.join(folder, WEIGHTS_NAME)
    index = os.path.join(folder, INDEX_NAME)
    if os.path.isfile(single):
        return load_file(single)
    if not os.path.isfile(index):
        present = sorted(os.listdir(folder))
        raise FileNotFoundError(f"head checkpoint {folder}: neither {WEIGHTS_NAME} nor {INDEX_NAME}"
                                f" found (files: {present})")
    with open(index) as f:
        weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"head checkpoint {folder}: {INDEX_NAME} has no 'weight_map' dict")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = os.path.join(folder, shard)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"head checkpoint {folder}: shard {shard} listed in {INDEX_NAME} is missing")
        part = load_file(path)
        dup = sorted(set(part) & set(state))
        if dup:
            raise ValueError(f"head checkpoint {folder}: keys {dup} appear in more than one shard")
        state.update(part)
    unlisted = sorted(k for k in state if weight_map.get(k) is None)
    listed_missing = sorted(k for k in weight_map if k not in state)
    if unlisted or listed_missing:
        raise ValueError(f"head checkpoint {folder}: {INDEX_NAME} disagrees with its shards "
                         f"(in shards but not indexed: {unlisted}; indexed but absent: {listed_missing})")
    return state
