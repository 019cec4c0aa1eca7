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


def test_beyond_writes_only_new_train_prompts_with_the_same_held_out(tmp_path):
    from launch.build_prompts import main
    base, more = tmp_path / "base", tmp_path / "more"
    main(["--out", str(base), "--per-category", "30", "--heldout", "5", "--categories", "code", "chat"])
    main(["--out", str(more), "--per-category", "70", "--heldout", "5", "--categories", "code", "chat",
          "--beyond", str(base)])
    assert sorted(p.name for p in more.iterdir()) == ["chat.train.jsonl", "code.train.jsonl", "manifest.json"]
    manifest = json.loads((more / "manifest.json").read_text())
    assert manifest["beyond"] == str(base) and manifest["heldout"] == 5
    for cat in ("code", "chat"):
        old = {r["prompt"] for r in _records(base / f"{cat}.train.jsonl")}
        held = {r["prompt"] for r in _records(base / f"{cat}.heldout.jsonl")}
        new = [r["prompt"] for r in _records(more / f"{cat}.train.jsonl")]
        assert manifest["files"][f"{cat}.train.jsonl"] == len(new)
        # the 70-prompt build's train set is the 30-prompt one plus 40 more (a group may be split at the cut)
        assert 40 <= len(new) <= 70 and len(set(new)) == len(new)
        assert not set(new) & old and not set(new) & held
        full = {c.prompt for c in build_prompt_set(cat, 70, 5, 0).train}
        assert old <= full and old | set(new) == full  # exactly the bigger build's train prompts
    # a different held-out draw would let base_dir's held-out prompts into the new train prompts
    with pytest.raises(ValueError, match="held-out prompts are not the ones"):
        main(["--out", str(tmp_path / "x"), "--per-category", "70", "--heldout", "6", "--categories", "code",
              "--beyond", str(base)])
    with pytest.raises(ValueError, match="missing"):
        main(["--out", str(tmp_path / "y"), "--categories", "math", "--per-category", "10", "--beyond", str(base)])


def test_per_category_max_takes_every_candidate_left_and_bad_counts_are_named(capsys):
    from launch.build_prompts import main
    from sglang_jetspec.train.chat_prompts import chat_candidates
    from sglang_jetspec.train.prompt_split import dedupe
    ps = build_prompt_set("chat", None, 100, 0)
    cands = dedupe(chat_candidates(2))  # the chat category's seed: 1000 * seed + its index
    held_groups = {c.group for c in ps.heldout}
    assert len(ps.heldout) == 100
    assert {c.prompt for c in ps.train} == {c.prompt for c in cands if c.group not in held_groups}
    assert {c.prompt for c in build_prompt_set("chat", 3000, 100, 0).train} <= {c.prompt for c in ps.train}
    for bad in ("-3", "lots"):
        with pytest.raises(SystemExit):
            main(["--per-category", bad])
        assert f"'{bad}': expected a count >= 0 or 'max'" in capsys.readouterr().err


def test_committed_more_prompts_equal_a_fresh_build():
    """data/prompts-more: every code and chat train prompt data/prompts does not already hold."""
    more = REPO / "data" / "prompts-more"
    manifest = json.loads((more / "manifest.json").read_text())
    if manifest["python"] != platform.python_version():
        pytest.skip(f"files were built on Python {manifest['python']}; the stdlib harvest differs here")
    from sglang_jetspec.train.prompt_sets import beyond
    sets = beyond(build_prompt_sets(None, manifest["heldout"], manifest["seed"], ("code", "chat")), PROMPTS)
    assert manifest["beyond"] == "data/prompts" and sorted(manifest["files"]) == ["chat.train.jsonl", "code.train.jsonl"]
    for cat, ps in sets.items():
        assert [r["prompt"] for r in _records(more / f"{cat}.train.jsonl")] == [c.prompt for c in ps.train]
