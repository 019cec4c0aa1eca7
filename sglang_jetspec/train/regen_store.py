"""Sharded JSONL store of regenerated answers, built so an interrupted run resumes.

Layout of an output folder::

    meta.json          {"model": ..., "max_new_tokens": ...}  (a resume must match)
    shard_00000.jsonl  one answer per line: prompt, prompt_ids, output_ids, finish, file
    shard_00001.jsonl  ...

Every run writes to NEW shards (never appends to an old one) and flushes after each batch, so a
kill can at worst leave a torn final line in the shard being written; readers drop exactly that.
A prompt is done when its text appears in any shard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

SHARD_GLOB = "shard_*.jsonl"
RECORD_KEYS = ("prompt", "prompt_ids", "output_ids", "finish")


def shard_paths(out_dir: str | Path) -> list[Path]:
    return sorted(Path(out_dir).glob(SHARD_GLOB))


def _read_shard(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # torn write of a killed run
                return
            raise ValueError(f"{path}:{i + 1}: corrupt record in the middle of a shard") from None
        missing = [k for k in RECORD_KEYS if k not in rec]
        if missing:
            raise ValueError(f"{path}:{i + 1}: record lacks {missing}")
        yield rec


def read_records(out_dir: str | Path) -> Iterator[dict]:
    """All complete answers in shard order."""
    for path in shard_paths(out_dir):
        yield from _read_shard(path)


def done_prompts(out_dir: str | Path) -> set[str]:
    return {rec["prompt"] for rec in read_records(out_dir)}


def check_meta(out_dir: str | Path, meta: dict) -> None:
    """Write ``meta.json`` on first use; on resume refuse settings that would mix two kinds of data."""
    path = Path(out_dir) / "meta.json"
    if path.exists():
        old = json.loads(path.read_text())
        for key in ("max_new_tokens",):
            if old.get(key) != meta.get(key):
                raise ValueError(f"{out_dir}: resuming with {key}={meta.get(key)} but the stored answers "
                                 f"used {key}={old.get(key)}; use another --out or the same setting")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def check_other_answers(other_dir: str | Path, meta: dict) -> None:
    """An answer folder whose prompts a run may skip (``--skip-answered``): it must exist, hold
    shards, and have been made with the same model, max_new_tokens and chat template (else the
    prompts it skips would be answered differently from the ones this run writes)."""
    other = Path(other_dir)
    path = other / "meta.json"
    if not path.is_file() or not shard_paths(other):
        raise ValueError(f"--skip-answered {other_dir}: expected a regenerated answer folder (meta.json + "
                         f"shard_*.jsonl), found none")
    old = json.loads(path.read_text())
    for key in ("model", "max_new_tokens", "chat_template"):
        if old.get(key) != meta.get(key):
            raise ValueError(f"--skip-answered {other_dir}: its answers used {key}={old.get(key)!r}, "
                             f"this run {key}={meta.get(key)!r}; expected the same")


class ShardWriter:
    """Appends records to fresh shards of at most ``shard_size`` lines, durable after each ``write``."""

    def __init__(self, out_dir: str | Path, shard_size: int = 1000):
        if shard_size < 1:
            raise ValueError(f"shard_size {shard_size} must be >= 1")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        existing = shard_paths(self.out_dir)
        self._next_index = int(existing[-1].stem.split("_")[1]) + 1 if existing else 0
        self._file = None
        self._count = 0

    def _open_next(self) -> None:
        self.close()
        path = self.out_dir / f"shard_{self._next_index:05d}.jsonl"
        self._next_index += 1
        self._file = open(path, "x", encoding="utf-8", newline="\n")  # "x": never clobber a shard
        self._count = 0

    def write(self, records: list[dict]) -> None:
        for rec in records:
            if self._file is None or self._count >= self.shard_size:
                self._open_next()
            self._file.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._count += 1
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
