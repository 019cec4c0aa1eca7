"""`python -m launch.generate --engine sglang` (a real server started and stopped by the CLI)
writes the same format as the other engines, and its greedy tokens equal `--engine ar`'s."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _generate(engine: str, prompts: Path, out: Path, *extra: str) -> list[dict]:
    cmd = [sys.executable, "-m", "launch.generate", "--engine", engine, "--prompts", str(prompts),
           "--max-new-tokens", "32", "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_sglang_engine_matches_ar(tmp_path, smollm2_dir):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in
                               ("Write a Python function that reverses a string.", "What is 7 times 8?")))
    ar = _generate("ar", prompts, tmp_path / "ar.jsonl")
    sg = _generate("sglang", prompts, tmp_path / "sg.jsonl", "--budget", "16",
                   "--server-log", str(tmp_path / "server.log"))
    assert [set(r) for r in sg] == [set(r) for r in ar]  # one output format for every engine
    for a, s in zip(ar, sg):
        assert s["output_ids"] == a["output_ids"]
        assert s["text"] == a["text"]
        assert s["rounds"] >= 1 and s["seconds"] > 0
