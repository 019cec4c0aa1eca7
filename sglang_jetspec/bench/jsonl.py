"""JSON-lines input files of the benchmarks (workloads, expert traces): one reader, so a missing
file, a line that is not JSON and an empty file are named the same way, with file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def read_jsonl(path: str | Path, what: str, hint: str = "") -> Iterator[tuple[str, object]]:
    """(where = "name:line", parsed object) for every non-blank line; `what` names the file in
    errors ("workload file", "expert trace"), `hint` follows the missing-file message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist{hint}")
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
