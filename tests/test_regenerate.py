"""Regeneration: shards, resume after an interruption, and equality with plain HF greedy generate."""

import json

import pytest
import torch

from sglang_jetspec.reference.prompts import encode_prompts
from sglang_jetspec.train.regen_backends import Answer, HFGenerator, cut_at_eos
from sglang_jetspec.train.regen_store import ShardWriter, check_meta, done_prompts, read_records, shard_paths
from sglang_jetspec.train.regenerate import interleave, length_sorted_order, regenerate

PROMPTS = ["What is 2 + 3?", "Write a Python function that reverses a string.",
           "Name one planet of the solar system and say one fact about it in a sentence."]
NEW = 8
NEAR_TIE = 1e-4  # fp32 logit gap below which padded and unpadded greedy may legitimately differ


def _write_prompts(path, prompts):
    path.write_text("".join(json.dumps({"prompt": p, "source": "t"}) + "\n" for p in prompts))
    return path


@pytest.fixture(scope="module")
def generator(smollm2_dir):
    return HFGenerator(smollm2_dir)


@pytest.fixture(scope="module")
def resumed_run(generator, tmp_path_factory):
    """Run with limit 2, then without limit: returns (out_dir, first stats, second stats, shard0 bytes)."""
    tmp = tmp_path_factory.mktemp("regen")
    files = [_write_prompts(tmp / "a.jsonl", PROMPTS)]
    out = tmp / "out"
    first = regenerate(generator, files, out, max_new_tokens=NEW, batch_size=2, limit=2, progress=False)
    shard0 = (out / "shard_00000.jsonl").read_bytes()
    second = regenerate(generator, files, out, max_new_tokens=NEW, batch_size=2, progress=False)
    return out, first, second, shard0


def test_resume_skips_answered_prompts(resumed_run):
    out, first, second, shard0 = resumed_run
    assert (first.listed, first.skipped, first.answered) == (2, 0, 2)
    assert (second.listed, second.skipped, second.answered) == (3, 2, 1)
    assert [p.name for p in shard_paths(out)] == ["shard_00000.jsonl", "shard_00001.jsonl"]
    assert (out / "shard_00000.jsonl").read_bytes() == shard0, "the first run's answers were rewritten"
    assert [r["prompt"] for r in read_records(out)] == PROMPTS
    assert second.output_tokens <= NEW and second.tokens_per_s > 0


def test_records_are_well_formed(resumed_run, generator):
    out = resumed_run[0]
    recs = list(read_records(out))
    assert [r["prompt_ids"] for r in recs] == encode_prompts(generator.tokenizer, PROMPTS)
    for r in recs:
        assert 1 <= len(r["output_ids"]) <= NEW
        ends_eos = r["output_ids"][-1] in generator.eos
        assert r["finish"] == ("stop" if ends_eos else "length")
        assert r["finish"] == "stop" or len(r["output_ids"]) == NEW
        assert not any(t in generator.eos for t in r["output_ids"][:-1])
        assert r["file"] == "a"


@torch.inference_mode()
def test_batched_answers_equal_unbatched_hf_generate(resumed_run, generator):
    """Every stored (left-padded, batched) answer equals plain one-prompt ``model.generate``, up to near-ties."""
    model = generator.model
    for rec in read_records(resumed_run[0]):
        ids = torch.tensor([rec["prompt_ids"]])
        ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                             do_sample=False, pad_token_id=generator.pad_id)[0, ids.shape[1]:].tolist()
        ref = cut_at_eos(ref, generator.eos, NEW).output_ids
        got = rec["output_ids"]
        if got == ref:
            continue
        j = next(i for i, (a, b) in enumerate(zip(got, ref)) if a != b)
        logits = model(torch.tensor([rec["prompt_ids"] + ref[:j]])).logits[0, -1]  # [V]
        top2 = logits.topk(2).values
        gap = (top2[0] - top2[1]).item()
        assert gap < NEAR_TIE, f"{rec['prompt']!r}: diverges at token {j} with top-2 gap {gap:.2e} (not a tie)"
        print(f"near-tie at token {j} of {rec['prompt']!r}: gap {gap:.2e}")


def test_resume_refuses_other_max_new_tokens(resumed_run, generator):
    with pytest.raises(ValueError, match="max_new_tokens=4"):
        regenerate(generator, [], resumed_run[0], max_new_tokens=4, progress=False)


def test_skip_answered_extends_a_set_into_a_new_folder(resumed_run, generator, tmp_path):
    published, *_ = resumed_run  # holds answers to all of PROMPTS, made with max_new_tokens=NEW
    files = [_write_prompts(tmp_path / "more.jsonl", PROMPTS + ["Say hello."])]
    out = tmp_path / "extra"
    stats = regenerate(generator, files, out, max_new_tokens=NEW, batch_size=2, progress=False,
                       skip_answered=[published])
    assert (stats.listed, stats.skipped, stats.answered) == (4, 3, 1)
    assert [r["prompt"] for r in read_records(out)] == ["Say hello."]
    assert [r["prompt"] for r in read_records(published)] == PROMPTS, "the published folder changed"
    with pytest.raises(ValueError, match="max_new_tokens=8.*max_new_tokens=4"):  # refused before writing
        regenerate(generator, files, tmp_path / "other", max_new_tokens=4, progress=False,
                   skip_answered=[published])
    assert not (tmp_path / "other").exists()
    with pytest.raises(ValueError, match="expected a regenerated answer folder"):
        regenerate(generator, files, out, max_new_tokens=NEW, progress=False, skip_answered=[tmp_path / "nope"])


def test_cli_runs_and_resumes(smollm2_dir, tmp_path, capsys):
    from launch.regenerate import main

    f = _write_prompts(tmp_path / "p.jsonl", PROMPTS[:2])
    args = ["--model", str(smollm2_dir), "--prompts", str(f), "--out", str(tmp_path / "o"),
            "--max-new-tokens", "3", "--batch-size", "2", "--backend", "hf", "--limit", "1"]
    main(args)
    assert "answered 1" in capsys.readouterr().out
    main(args[:-2])
    assert "already done 1, answered 1" in capsys.readouterr().out
    assert done_prompts(tmp_path / "o") == set(PROMPTS[:2])


# ---- no model needed ---------------------------------------------------------------------------
def test_interleave_round_robin_and_dedupe(tmp_path):
    a = _write_prompts(tmp_path / "code.train.jsonl", ["a1", "a2", "a3", "shared"])
    b = _write_prompts(tmp_path / "math.train.jsonl", ["b1", "shared"])
    items = interleave([a, b])
    assert [w.prompt for w in items] == ["a1", "b1", "a2", "shared", "a3"]
    assert [w.file for w in items] == ["code.train", "math.train", "code.train", "math.train", "code.train"]


def test_batches_are_cut_from_length_sorted_windows():
    lengths = [5, 1, 4, 2, 9, 3, 3, 7]
    order = length_sorted_order(lengths, window=4)
    assert order == [1, 3, 2, 0, 5, 6, 7, 4]  # each window sorted, stable on ties, windows kept in place
    assert sorted(order) == list(range(len(lengths)))
    assert length_sorted_order(lengths, window=1) == list(range(len(lengths)))
    with pytest.raises(ValueError, match="window 0"):
        length_sorted_order(lengths, window=0)


def test_torn_last_line_is_dropped_and_middle_corruption_is_an_error(tmp_path):
    rec = {"prompt": "p", "prompt_ids": [1], "output_ids": [2], "finish": "stop"}
    (tmp_path / "shard_00000.jsonl").write_text(json.dumps(rec) + "\n" + '{"prompt": "q", "prom')
    assert done_prompts(tmp_path) == {"p"}
    with ShardWriter(tmp_path) as w:  # a resumed run never appends to the torn shard
        w.write([dict(rec, prompt="q")])
    assert [p.name for p in shard_paths(tmp_path)] == ["shard_00000.jsonl", "shard_00001.jsonl"]
    assert done_prompts(tmp_path) == {"p", "q"}
    (tmp_path / "shard_00002.jsonl").write_text("{bad\n" + json.dumps(rec) + "\n")
    with pytest.raises(ValueError, match="shard_00002.jsonl:1: corrupt"):
        done_prompts(tmp_path)


def test_shard_writer_rotates(tmp_path):
    rec = {"prompt": "p", "prompt_ids": [1], "output_ids": [2], "finish": "length"}
    with ShardWriter(tmp_path, shard_size=2) as w:
        w.write([dict(rec, prompt=str(i)) for i in range(3)])
        w.write([dict(rec, prompt="3"), dict(rec, prompt="4")])
    sizes = [len(p.read_text().splitlines()) for p in shard_paths(tmp_path)]
    assert sizes == [2, 2, 1]
    assert [r["prompt"] for r in read_records(tmp_path)] == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match="shard_size 0"):
        ShardWriter(tmp_path, shard_size=0)


def test_meta_written_once_and_checked(tmp_path):
    check_meta(tmp_path, {"max_new_tokens": 160, "model": "m"})
    check_meta(tmp_path, {"max_new_tokens": 160, "model": "other place"})
    with pytest.raises(ValueError, match="max_new_tokens=8 but the stored answers used max_new_tokens=160"):
        check_meta(tmp_path, {"max_new_tokens": 8})


def test_cut_at_eos():
    assert cut_at_eos([5, 6, 2, 2, 2], {2}, 5) == Answer([5, 6, 2], "stop")
    assert cut_at_eos([5, 6, 7], {2}, 3) == Answer([5, 6, 7], "length")
