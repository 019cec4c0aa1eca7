"""build_trees_from_top (core/tree.py): a batch's trees built with one table check and one host
copy, in Python or by the compiled builders (core/tree_native.py), equal the trees of
build_tree_from_top called per request (the Python reference), with and without the n-gram
prior, for mixed budgets, widths and depths; bad tables are refused as per request."""

import random
import shutil

import pytest
import torch

from sglang_jetspec.core.pair_prior import PairPrior, PriorSettings
from sglang_jetspec.core import tree_native
from sglang_jetspec.core.tree import build_tree_from_top, build_trees_from_top

FIELDS = ("tokens", "parents", "depths", "ranks", "scores")


def _case(seed: int):
    rnd, g = random.Random(seed), torch.Generator().manual_seed(seed)
    vocab, b, rows = rnd.choice([7, 20, 60]), rnd.randint(1, 6), rnd.randint(1, 8)
    k = rnd.randint(1, min(vocab, 12))
    logits = torch.randn(b, rows, vocab, generator=g) * rnd.choice([0.1, 1.0, 3.0])
    if rnd.random() < 0.3:
        logits = logits.round()  # many equal log-probs: the tie order must match too
    vals, ids = torch.log_softmax(logits, -1).topk(k, -1)
    if k > 1 and rnd.random() < 0.2:
        vals[..., k // 2:] = float("-inf")  # tokens the draft vocabulary masks out
    seqs = [[rnd.randrange(vocab) for _ in range(rnd.randint(2, 40))] for _ in range(rnd.randint(0, 30))]
    prior = PairPrior.from_sequences(seqs, vocab, PriorSettings(weight=rnd.choice([0.0, 0.5, 1.0]),
                                                                weight3=rnd.choice([0.0, 0.5]), pool=k))
    args = dict(roots=[rnd.randrange(vocab) for _ in range(b)], budgets=[rnd.randint(1, 40) for _ in range(b)],
                widths=[rnd.randint(1, 9) for _ in range(b)], max_depths=[rnd.randint(1, rows) for _ in range(b)],
                prev_tokens=[rnd.choice([None, rnd.randrange(vocab)]) for _ in range(b)])
    return vals, ids, prior, args


def test_the_native_builder_is_built_where_there_is_a_compiler():
    if shutil.which("c++") or shutil.which("g++"):
        assert tree_native.library() is not None, "a C++ compiler is here but the native tree builder failed"


@pytest.mark.parametrize("path", ["plain-python", "plain-native", "prior-python", "prior-native"])
@pytest.mark.parametrize("seed", range(40))
def test_batch_trees_equal_the_per_request_trees(seed, path):
    vals, ids, prior, a = _case(seed)
    prior = None if path.startswith("plain") else prior
    got = build_trees_from_top(a["roots"], vals, ids, a["budgets"], a["widths"], a["max_depths"], prior,
                               a["prev_tokens"], native=path.endswith("native"))
    assert len(got) == vals.shape[0]
    for i, tree in enumerate(got):
        ref = build_tree_from_top(a["roots"][i], vals[i], ids[i], a["budgets"][i], a["widths"][i],
                                  a["max_depths"][i], prior=prior, prev_token=a["prev_tokens"][i])
        for f in FIELDS:
            assert torch.equal(getattr(tree, f), getattr(ref, f)), (seed, i, f)


def _table(rows=3, k=4):
    return torch.log_softmax(torch.randn(2, rows, 20, generator=torch.Generator().manual_seed(0)), -1).topk(k, -1)


@pytest.mark.parametrize("spoil,msg", [
    (lambda v: v[1, 0, 1].fill_(float("nan")), "NaN"),
    (lambda v: v[0, 1, 0].fill_(0.5), "not logits"),
    (lambda v: v[1, 1, 2].fill_(0.0), "descending"),
])
def test_bad_tables_are_refused_like_one_request(spoil, msg):
    vals, ids = _table()
    spoil(vals)
    with pytest.raises(ValueError, match=msg):
        build_trees_from_top([0, 0], vals, ids, [8, 8], [4, 4], [3, 3])
    errors = []
    for i in range(2):  # the per-request calls refuse the same table, for the same reason
        try:
            build_tree_from_top(0, vals[i], ids[i], 8, 4, 3)
        except ValueError as e:
            errors.append(str(e))
    assert len(errors) == 1 and msg in errors[0]


def test_rows_and_columns_a_request_never_reads_are_not_checked():
    vals, ids = _table()
    vals[0, 2, :] = float("nan")  # request 0 stops at depth 2: its row 2 is never read
    vals[1, :, 3] = float("nan")  # request 1 has width 3 and no prior: column 3 is never read
    trees = build_trees_from_top([1, 2], vals, ids, [8, 8], [4, 3], [2, 3])
    assert [t.n for t in trees] == [8, 8]
    with pytest.raises(ValueError, match="NaN"):
        build_trees_from_top([1, 2], vals, ids, [8, 8], [4, 3], [3, 3])


@pytest.mark.parametrize("kw,msg", [
    (dict(budgets=[8]), "one entry per request"),
    (dict(budgets=[0, 8]), "budget 0"),
    (dict(max_depths=[4, 3]), "max_depth 4"),
])
def test_bad_arguments_name_the_value(kw, msg):
    vals, ids = _table()
    a = dict(roots=[0, 0], budgets=[8, 8], widths=[4, 4], max_depths=[3, 3]) | kw
    with pytest.raises(ValueError, match=msg):
        build_trees_from_top(a["roots"], vals, ids, a["budgets"], a["widths"], a["max_depths"])


def test_a_negative_prev_token_is_refused_with_a_prior():
    vals, ids = _table()
    prior = PairPrior.from_sequences([[1, 2, 3, 1, 2]], 20)
    with pytest.raises(ValueError, match="prev_token -3"):
        build_trees_from_top([0, 0], vals, ids, [8, 8], [4, 4], [3, 3], prior, [1, -3])


# ---- the compiled builder's switch and fallbacks ----------------------------------------------

@pytest.fixture
def fresh_native(monkeypatch):
    """tree_native as if not yet loaded in this process (restored afterwards)."""
    monkeypatch.setattr(tree_native, "_state", {})
    return monkeypatch


@pytest.mark.parametrize("how", ["off", "no-compiler", "broken-compiler"])
def test_without_the_native_builder_the_python_builder_gives_the_trees(fresh_native, caplog, how, tmp_path):
    fresh_native.setenv("JETSPEC_CACHE_DIR", str(tmp_path))  # nothing compiled there yet
    if how == "off":
        fresh_native.setenv(tree_native.ENV, "Off ")
    elif how == "no-compiler":
        fresh_native.delenv("CXX", raising=False)
        fresh_native.setattr(tree_native.shutil, "which", lambda name: None)
    else:
        fresh_native.setenv("CXX", "false")  # exits 1: the build fails
    assert tree_native.library() is None
    if how != "off":
        assert "Python" in caplog.text  # said once, as a warning
    vals, ids, prior, a = _case(3)
    got = build_trees_from_top(a["roots"], vals, ids, a["budgets"], a["widths"], a["max_depths"], prior,
                               a["prev_tokens"])
    for i, tree in enumerate(got):
        ref = build_tree_from_top(a["roots"][i], vals[i], ids[i], a["budgets"][i], a["widths"][i],
                                  a["max_depths"][i], prior=prior, prev_token=a["prev_tokens"][i])
        assert torch.equal(tree.tokens, ref.tokens) and torch.equal(tree.parents, ref.parents)


def test_a_typo_in_the_switch_stops_the_server_at_startup():
    from sglang_jetspec.integration.server_args import check_native_tree

    errs = check_native_tree({tree_native.ENV: "yes"})
    assert errs and "SGLANG_JETSPEC_NATIVE_TREE='yes'" in errs[0] and "['on', 'off']" in errs[0]
    assert check_native_tree({tree_native.ENV: "off"}) == check_native_tree({}) == []


def test_an_empty_batch_gives_no_trees():
    vals, ids = _table()
    assert build_trees_from_top([], vals[:0], ids[:0], [], [], []) == []


def test_bench_tree_build_command(tmp_path, capsys):
    """launch.bench_tree_build on a small prior and answers of its own: it checks the two builders
    agree and prints one row per (prior, budget, batch)."""
    import json

    from launch.bench_tree_build import main

    rnd = random.Random(0)
    answers = [[rnd.randrange(50) for _ in range(60)] for _ in range(20)]
    PairPrior.from_sequences(answers, 50, PriorSettings(pool=8)).save(str(tmp_path))
    data = tmp_path / "regen"
    data.mkdir()
    with open(data / "shard_00000.jsonl", "w") as f:
        for a in answers:
            f.write(json.dumps({"prompt": "p", "prompt_ids": [1], "output_ids": a}) + "\n")
    main(["--head", str(tmp_path), "--data", str(data), "--batch-sizes", "1,3", "--budgets", "8,16",
          "--width", "3", "--rows", "6", "--repeats", "1"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["on"], ["off"])]
    assert len(rows) == 8 and {(r[0], r[1], r[2]) for r in rows} == {
        (p, b, n) for p in ("on", "off") for b in ("8", "16") for n in ("1", "3")}
    assert "every batched tree equals its one-request tree" in out
    with pytest.raises(SystemExit, match="no pair_prior"):
        main(["--head", str(data), "--data", str(data)])


@pytest.mark.parametrize("seed", range(6))
def test_tokens_outside_the_priors_vocabulary_get_no_bonus_in_both_builders(seed):
    """A prior counted over 12 tokens, drafts over 40: keys p*V + t of such tokens would alias
    counted pairs if the native tables looked them up."""
    rnd, g = random.Random(seed), torch.Generator().manual_seed(seed)
    prior = PairPrior.from_sequences([[rnd.randrange(12) for _ in range(50)] for _ in range(8)], 12,
                                     PriorSettings(pool=10))
    vals, ids = torch.log_softmax(torch.randn(3, 5, 40, generator=g), -1).topk(10, -1)
    args = ([rnd.randrange(40) for _ in range(3)], vals, ids, [24] * 3, [4] * 3, [5] * 3, prior,
            [rnd.randrange(40) for _ in range(3)])
    native, python = build_trees_from_top(*args), build_trees_from_top(*args, native=False)
    for a, b in zip(native, python):
        for f in FIELDS:
            assert torch.equal(getattr(a, f), getattr(b, f)), f
