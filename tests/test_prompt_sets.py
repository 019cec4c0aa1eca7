"""Bundled prompt sets: sizes, train / held-out disjointness, determinism, generator sanity."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_jetspec.reference.prompts import read_prompts
from sglang_jetspec.train.math_prompts import math_candidates, plural, signed
from sglang_jetspec.train.prompt_sets import CATEGORIES, build_prompt_set, build_prompt_sets
from sglang_jetspec.train.prompt_split import PromptCandidate, split_by_group

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "data" / "prompts"


def _records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.mark.parametrize("category", CATEGORIES)
def test_committed_files_sizes_and_disjoint(category):
    train = _records(PROMPTS / f"{category}.train.jsonl")
    held = _records(PROMPTS / f"{category}.heldout.jsonl")
    assert len(train) >= 3000 and len(held) == 100
    train_p = {r["prompt"] for r in train}
    assert len(train_p) == len(train), "duplicate prompts in train"
    assert not train_p & {r["prompt"] for r in held}, "held-out prompt also in train"
    assert all(r["source"] for r in train + held)
    assert read_prompts(PROMPTS / f"{category}.train.jsonl") == [r["prompt"] for r in train]


def test_committed_files_total_size_is_small():
    total = sum(p.stat().st_size for p in PROMPTS.glob("*.jsonl"))
    assert total < 5_000_000, f"prompt files are {total} bytes; keep them committable"


def test_all_humaneval_problems_are_bundled():
    recs = _records(PROMPTS / "code.train.jsonl") + _records(PROMPTS / "code.heldout.jsonl")
    assert sum(r["source"] == "humaneval" for r in recs) == 2 * 164


@pytest.mark.parametrize("category", CATEGORIES)
def test_split_keeps_groups_on_one_side(category):
    ps = build_prompt_set(category, n_train=300, n_heldout=40, seed=3)
    assert len(ps.train) == 300 and len(ps.heldout) == 40
    assert not {c.group for c in ps.train} & {c.group for c in ps.heldout}
    assert not {c.prompt for c in ps.train} & {c.prompt for c in ps.heldout}


def test_split_by_group_priority_and_shortfall():
    cands = [PromptCandidate(f"p{i}", "s", f"g{i // 2}", priority=0 if i < 4 else 1) for i in range(40)]
    train, held = split_by_group(cands, n_train=4, n_heldout=6, seed=1)
    assert len(train) == 4 and len(held) == 6
    # the priority-0 groups g0, g1 fill train first, unless the held-out draw took them
    left = {"g0", "g1"} - {c.group for c in held}
    assert left <= {c.group for c in train}
    train, held = split_by_group(cands[:6], n_train=10, n_heldout=2, seed=0)
    assert len(train) + len(held) == 6  # short, not padded
    with pytest.raises(ValueError, match="must be >= 0"):
        split_by_group(cands, -1, 0, 0)


def test_build_refuses_impossible_counts():
    with pytest.raises(ValueError, match="only"):
        build_prompt_set("chat", n_train=100_000, n_heldout=10)
    with pytest.raises(ValueError, match="not one of"):
        build_prompt_set("poetry")


def test_rebuild_is_byte_identical_across_hash_seeds(tmp_path):
    outs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-m", "launch.build_prompts", "--out", str(out), "--per-category", "20",
                        "--heldout", "5"], cwd=REPO, env=env, check=True, capture_output=True)
        outs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outs[0] == outs[1]
    assert len(outs[0]) == 7  # 3 categories x 2 splits + manifest
    assert len(outs[0]["math.train.jsonl"].splitlines()) == 20


def test_committed_files_equal_a_fresh_build():
    manifest = json.loads((PROMPTS / "manifest.json").read_text())
    if manifest["python"] != platform.python_version():
        pytest.skip(f"files were built on Python {manifest['python']}; the stdlib harvest differs here")
    sets = build_prompt_sets(seed=manifest["seed"])
    for cat, ps in sets.items():
        for split, items in (("train", ps.train), ("heldout", ps.heldout)):
            assert [r["prompt"] for r in _records(PROMPTS / f"{cat}.{split}.jsonl")] == [c.prompt for c in items]


def test_math_generator_is_seeded_and_well_formed():
    a, b = math_candidates(7, 500), math_candidates(7, 500)
    assert [c.prompt for c in a] == [c.prompt for c in b]
    assert [c.prompt for c in a] != [c.prompt for c in math_candidates(8, 500)]
    assert len({c.prompt for c in a}) > 480
    assert not any("+ -" in c.prompt or "- -" in c.prompt for c in a)
    assert len({c.source for c in a}) >= 20
    assert signed(-3) == "- 3" and signed(0) == "+ 0"
    assert plural("pair of socks") == "pairs of socks" and plural("sandwich") == "sandwiches"
    with pytest.raises(ValueError, match="count -1"):
        math_candidates(0, -1)


def test_code_prompts_carry_real_code():
    ps = build_prompt_set("code", n_train=600, n_heldout=10, seed=5)  # > 328 HumanEval, taken first
    shown = [c.prompt for c in ps.train if "```python" in c.prompt]
    assert len(shown) > 50 and all(p.endswith("```") and "def " in p for p in shown)
    assert any(c.source == "stdlib-write" and "`" in c.prompt for c in ps.train)
