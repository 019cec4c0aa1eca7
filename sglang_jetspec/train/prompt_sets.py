"""The bundled prompt sets: code, math and chat, each split into train and held-out JSONL files.

Everything is built from sources installed on this machine (HumanEval from PyPI, the standard
library, seeded generators), so ``python -m launch.build_prompts`` rebuilds the committed files
byte for byte on the same Python version. Files: ``{category}.{train,heldout}.jsonl``, one
``{"prompt": ..., "source": ...}`` per line (``reference.prompts.read_prompts`` reads them).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

from sglang_jetspec.train.chat_prompts import chat_candidates
from sglang_jetspec.train.code_prompts import code_candidates
from sglang_jetspec.train.math_prompts import math_candidates
from sglang_jetspec.train.prompt_split import PromptCandidate, split_by_group

CATEGORIES = ("code", "math", "chat")
DEFAULT_TRAIN = 3000
DEFAULT_HELDOUT = 100


@dataclass
class PromptSet:
    category: str
    train: list[PromptCandidate]
    heldout: list[PromptCandidate]


def candidates(category: str, seed: int, needed: int) -> list[PromptCandidate]:
    if category == "code":
        return code_candidates(seed)
    if category == "math":
        return math_candidates(seed, needed + needed // 10 + 50)  # margin for duplicate draws
    if category == "chat":
        return chat_candidates(seed)
    raise ValueError(f"category {category!r} is not one of {CATEGORIES}")


def build_prompt_set(category: str, n_train: int | None = DEFAULT_TRAIN, n_heldout: int = DEFAULT_HELDOUT,
                     seed: int = 0) -> PromptSet:
    """n_train None: every candidate the held-out draw leaves (the held-out prompts and, for a
    given n, the first n train prompts as a set do not depend on n_train; math, generated on
    demand, makes 9000 train prompts at most then)."""
    cat_seed = seed * 1000 + CATEGORIES.index(category) if category in CATEGORIES else seed
    cands = candidates(category, cat_seed, (9000 if n_train is None else n_train) + n_heldout)
    train, heldout = split_by_group(cands, len(cands) if n_train is None else n_train, n_heldout, cat_seed)
    if (n_train is not None and len(train) < n_train) or len(heldout) < n_heldout:
        raise ValueError(f"{category}: asked for {n_train} train / {n_heldout} held-out prompts, "
                         f"only {len(train)} / {len(heldout)} could be made from {len(cands)} candidates")
    return PromptSet(category, train, heldout)


def build_prompt_sets(n_train: int = DEFAULT_TRAIN, n_heldout: int = DEFAULT_HELDOUT, seed: int = 0,
                      categories: tuple[str, ...] = CATEGORIES) -> dict[str, PromptSet]:
    return {c: build_prompt_set(c, n_train, n_heldout, seed) for c in categories}


def beyond(sets: dict[str, PromptSet], base_dir: str | Path) -> dict[str, PromptSet]:
    """The train prompts of `sets` that the prompt folder `base_dir` does not already train on, to
    answer and train on next to it (no held-out prompts of their own). Refused unless `base_dir`
    holds each category's train file and exactly the held-out prompts of `sets`: otherwise the new
    train prompts could include base_dir's held-out ones."""
    base = Path(base_dir)
    out = {}
    for cat, ps in sets.items():
        files = {split: base / f"{cat}.{split}.jsonl" for split in ("train", "heldout")}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            raise ValueError(f"--beyond {base_dir}: expected a prompt folder with {cat} train and held-out "
                             f"files; missing {missing}")
        read = {split: {json.loads(line)["prompt"] for line in f.read_text(encoding="utf-8").splitlines()
                        if line.strip()}
                for split, f in files.items()}
        if read["heldout"] != {c.prompt for c in ps.heldout}:
            raise ValueError(f"--beyond {base_dir}: its {cat} held-out prompts are not the ones this build "
                             f"holds out (same --seed and --heldout as that folder's manifest expected)")
        new = [c for c in ps.train if c.prompt not in read["train"]]
        out[cat] = PromptSet(cat, new, [])
    return out


def _write_jsonl(path: Path, items: list[PromptCandidate]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for c in items:
            f.write(json.dumps(c.record(), ensure_ascii=False) + "\n")


def write_prompt_sets(sets: dict[str, PromptSet], out_dir: str | Path, seed: int = 0,
                      extra: dict | None = None) -> list[Path]:
    """Write the JSONL files plus ``manifest.json`` (counts, seed, the Python that built them, and
    `extra` entries). A set without held-out prompts (`beyond`) gets no held-out file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    manifest = {"seed": seed, "python": platform.python_version(), "files": {}, **(extra or {})}
    for cat, ps in sets.items():
        for split, items in (("train", ps.train), ("heldout", ps.heldout)):
            if split == "heldout" and not items:
                continue
            path = out / f"{cat}.{split}.jsonl"
            _write_jsonl(path, items)
            written.append(path)
            manifest["files"][path.name] = len(items)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return written
