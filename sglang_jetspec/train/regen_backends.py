"""Greedy answer generators for regeneration: batched transformers on CPU, SGLang's Engine on GPU.

Both take chat-templated prompt ids and return, per prompt, the answer ids and why it ended:
``"stop"`` (the answer ends with an EOS id, kept as its last token so training learns to stop)
or ``"length"`` (cut at ``max_new_tokens``).

Batched left-padded greedy decoding in transformers is not bit-identical to one prompt at a
time: padding changes the shapes of the fp32 matmuls, so logits move by ~1e-5 and an answer can
flip where the target's top-2 logits are that close (see ``tests/test_regenerate.py``). Either
answer is the target's own greedy choice up to that tie, which is what the head is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Answer:
    output_ids: list[int]
    finish: str  # "stop" | "length"


def eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for src in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if src is not None:
            ids.update([src] if isinstance(src, int) else list(src))
    if not ids:
        raise ValueError("the model defines no eos_token_id; answers could never finish with 'stop'")
    return ids


def cut_at_eos(ids: list[int], eos: set[int], max_new_tokens: int) -> Answer:
    """Keep tokens up to and including the first EOS (generate pads finished rows with EOS/pad)."""
    for i, t in enumerate(ids):
        if t in eos:
            return Answer(ids[: i + 1], "stop")
    return Answer(ids[:max_new_tokens], "length")


class HFGenerator:
    """Batched greedy generation with left padding in plain transformers (the CPU path)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
        self.device = torch.device(device)
        self.eos = eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos)

    def left_pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)  # [B, S]
        mask = torch.zeros((len(batch), width), dtype=torch.long)                     # [B, S]
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        return input_ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def generate(self, batch: list[list[int]], max_new_tokens: int) -> list[Answer]:
        if not batch:
            return []
        input_ids, mask = self.left_pad(batch)
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                  do_sample=False, pad_token_id=self.pad_id, eos_token_id=sorted(self.eos))
        new = out[:, input_ids.shape[1]:].tolist()  # [B, <= max_new_tokens]
        return [cut_at_eos(row, self.eos, max_new_tokens) for row in new]

    def close(self) -> None:
        pass


class SGLangGenerator:
    """SGLang's offline ``sglang.Engine`` (the GPU path).

    UNTESTED in this project so far: written against sglang 0.5.23's Engine.generate, whose
    result dicts carry ``output_ids`` and ``meta_info["finish_reason"] = {"type": "stop" |
    "length" | "abort", "matched": ...}``. Check it on a GPU against ``HFGenerator`` before
    trusting a large run.
    """

    def __init__(self, model_dir: str | Path, **engine_kwargs):
        import sglang
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.engine = sglang.Engine(model_path=str(model_dir), **engine_kwargs)
        eos = self.tokenizer.eos_token_id
        self.eos = {eos} if isinstance(eos, int) else set(eos or [])

    def generate(self, batch: list[list[int]], max_new_tokens: int) -> list[Answer]:
        if not batch:
            return []
        params = {"temperature": 0.0, "max_new_tokens": max_new_tokens}
        outs = self.engine.generate(input_ids=batch, sampling_params=params)
        answers = []
        for out in outs:
            ids = list(out["output_ids"])
            reason = out["meta_info"]["finish_reason"] or {}
            kind = reason.get("type")
            if kind not in ("stop", "length"):
                raise RuntimeError(f"SGLang finished a request with {reason!r}; expected stop or length")
            matched = reason.get("matched")
            if kind == "stop" and isinstance(matched, int) and (not ids or ids[-1] != matched):
                ids.append(matched)  # keep the EOS as the HF path does
            answers.append(Answer(ids, kind))
        return answers

    def close(self) -> None:
        self.engine.shutdown()


def load_generator(model_dir: str | Path, backend: str = "auto", device: str | None = None):
    """``auto``: SGLang when a CUDA device is present and importable, else transformers.

    device: for the transformers backend (default: cuda when present, else cpu)."""
    if backend == "auto":
        backend = "sglang" if torch.cuda.is_available() and _has_sglang() else "hf"
    if backend == "hf":
        return HFGenerator(model_dir, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if backend == "sglang":
        return SGLangGenerator(model_dir)
    raise ValueError(f"backend {backend!r} must be one of auto, hf, sglang")


def _has_sglang() -> bool:
    from importlib.util import find_spec

    return find_spec("sglang") is not None
