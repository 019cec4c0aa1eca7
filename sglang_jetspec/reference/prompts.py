"""Prompt files (JSONL, one ``{"prompt": "..."}`` per line) and their tokenisation."""

from __future__ import annotations

import json
from pathlib import Path


def read_prompts(path: str | Path) -> list[str]:
    prompts = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise ValueError(f'{path}:{lineno}: expected an object with a string "prompt" field')
            if not obj["prompt"]:
                raise ValueError(f"{path}:{lineno}: empty prompt")
            prompts.append(obj["prompt"])
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def encode_prompts(tokenizer, prompts: list[str], raw: bool = False) -> list[list[int]]:
    """Token ids per prompt; the chat template (user turn + generation prompt) unless ``raw``."""
    if raw:
        return [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    out = []
    for p in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
        out.append(list(ids))
    return out
