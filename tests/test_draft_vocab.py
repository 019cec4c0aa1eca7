"""Draft vocabulary (core/draft_vocab.py): the fast subset scoring equals the plain reference, the
file round-trips and bad files are refused with their path, and decoding with a subset stays
lossless (greedy parity and the sampled law) while drafting only tokens of the subset."""

import numpy as np
import pytest
import torch

from sglang_jetspec.core.draft_vocab import (FILE_NAME, DraftVocab, coverage, most_frequent,
                                             reference_logprobs)


@pytest.mark.parametrize("lead,pad,strided", [((5,), 0, False), ((3, 4), 7, True), ((1,), 3, False), ((2, 2), 0, True)])
def test_subset_logprobs_equal_the_masked_full_softmax(lead, pad, strided):
    g = torch.Generator().manual_seed(len(lead) * 10 + pad)
    V, d = 97, 16
    weight = torch.randn(V + pad, d, generator=g)  # SGLang pads the lm_head past the vocabulary
    hidden = torch.randn(*lead, 2 * d if strided else d, generator=g)
    if strided:
        hidden = hidden[..., ::2]  # the drafter's rows are a strided slice of its block
    ids = torch.randperm(V, generator=g)[:23].sort().values
    vocab = DraftVocab(ids)
    got = vocab.logprobs(hidden, weight, V)
    want = reference_logprobs(hidden, weight, V, ids)
    assert got.shape == (*lead, V) and got.dtype == torch.float32
    outside = torch.ones(V, dtype=torch.bool)
    outside[ids] = False
    assert torch.isinf(got[..., outside]).all() and torch.isfinite(got[..., ids]).all()
    torch.testing.assert_close(got[..., ids], want[..., ids], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[..., ids].exp().sum(-1), torch.ones(lead))
    # a second weight (another target) gets its own rows, not the cached ones
    other = torch.randn(V, d, generator=g)
    torch.testing.assert_close(vocab.logprobs(hidden, other, V)[..., ids],
                               reference_logprobs(hidden, other, V, ids)[..., ids], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ids,match", [([], "at least one"), ([3, 2], "sorted and unique"),
                                       ([1, 1, 2], "sorted and unique"), ([-1, 4], "negative")])
def test_bad_token_ids_are_refused(ids, match):
    with pytest.raises(ValueError, match=match):
        DraftVocab(ids)


def test_check_names_the_out_of_range_id_and_a_too_small_vocabulary():
    v = DraftVocab([0, 5, 9])
    assert v.check(10, 3) == []
    errs = v.check(9, 4)
    assert any("token id 9" in e and "vocabulary of 9" in e for e in errs)
    assert any("3 tokens is smaller than the tree width 4" in e for e in errs)


def test_file_round_trip_and_bad_files(tmp_path):
    assert DraftVocab.load(str(tmp_path)) is None  # no file: full vocabulary
    DraftVocab([2, 3, 40]).save(str(tmp_path))
    assert DraftVocab.load(str(tmp_path)).token_ids.tolist() == [2, 3, 40]
    from safetensors.torch import save_file

    save_file({"token_ids": torch.tensor([4, 1], dtype=torch.int32)}, str(tmp_path / FILE_NAME))
    with pytest.raises(ValueError, match=f"{FILE_NAME}: draft vocabulary token ids must be sorted"):
        DraftVocab.load(str(tmp_path))
    save_file({"ids": torch.tensor([1]), "x": torch.tensor([2])}, str(tmp_path / FILE_NAME))
    with pytest.raises(ValueError, match="expected one tensor 'token_ids'"):
        DraftVocab.load(str(tmp_path))
    (tmp_path / FILE_NAME).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        DraftVocab.load(str(tmp_path))


def test_most_frequent_breaks_ties_by_id_and_keeps_the_always_ids():
    vocab, counts = most_frequent([[5, 5, 7, 3], [7, 5, 9, 3]], size=2, always=[11])
    assert counts[5] == 3 and counts[7] == 2 and counts[3] == 2
    assert vocab.token_ids.tolist() == [3, 5, 11]  # 5 (3x), then 3 before 7 (2x each), plus 11
    assert coverage(vocab, [[5, 3, 7, 11]]) == pytest.approx(0.75)
    assert coverage(vocab, []) == 0.0
    with pytest.raises(ValueError, match="size 0"):
        most_frequent([[1]], 0)


def test_load_head_attaches_the_folder_vocabulary_and_export_copies_it(tmp_path):
    from launch.export_head import main as export_main
    from sglang_jetspec.core.checkpoint import load_head, save_head
    from sglang_jetspec.core.head import DraftHead
    from sglang_jetspec.core.head_config import HeadConfig

    cfg = HeadConfig.for_target(24, 6, 50, num_layers=1, hidden_size=32, num_attention_heads=4,
                                num_key_value_heads=2, block_size=4, mask_token_id=49)
    save_head(DraftHead(cfg), str(tmp_path / "h"))
    assert load_head(str(tmp_path / "h")).draft_vocab is None
    DraftVocab(list(range(0, 50, 2))).save(str(tmp_path / "h"))
    assert len(load_head(str(tmp_path / "h")).draft_vocab) == 25
    assert load_head(str(tmp_path / "h"), draft_vocab=False).draft_vocab is None
    export_main(["--head", str(tmp_path / "h"), "--out", str(tmp_path / "x")])
    assert load_head(str(tmp_path / "x")).draft_vocab.token_ids.tolist() == list(range(0, 50, 2))


# ---- decoding with a subset: lossless, and only subset tokens are drafted -------------------

def _subset_decoder(budget=8, width=3, depth=3, vocab=50, keep=20, seed=1, sharpness=40.0):
    from test_reference_tiny import tiny_head, tiny_target

    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings

    target = tiny_target(vocab=vocab, seed=seed, sharpness=sharpness)
    head = tiny_head(target, seed=seed + 1)
    head.draft_vocab = DraftVocab(torch.randperm(vocab, generator=torch.Generator().manual_seed(seed))[:keep].sort().values)
    return target, head, ReferenceDecoder(target, head, TreeSettings(budget=budget, width=width, depth=depth))


def test_greedy_with_a_subset_equals_plain_decoding_and_drafts_only_subset_tokens(monkeypatch):
    import sglang_jetspec.reference.decoder as decoder_mod
    from sglang_jetspec.reference.ar import generate_ar

    target, head, dec = _subset_decoder(budget=24, width=4, depth=6)
    drafted = set()

    def spy(real):
        def build(root, *a, **kw):
            tree = real(root, *a, **kw)
            drafted.update(tree.tokens[1:].tolist())  # node 0 is the committed root
            return tree
        return build

    for name in ("build_tree", "build_tree_from_top"):  # greedy builds from the subset's top-W
        monkeypatch.setattr(decoder_mod, name, spy(getattr(decoder_mod, name)))
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        prompt = torch.randint(0, 49, (int(torch.randint(3, 10, (), generator=gen)),), generator=gen).tolist()
        assert dec.generate(prompt, 20).output_ids == generate_ar(target, prompt, 20).output_ids
    assert drafted and drafted <= set(head.draft_vocab.token_ids.tolist())


def test_sampling_with_a_subset_follows_the_target_distribution():
    """As test_reference_tiny's chi-square test, with a draft that can propose only 4 of 6 tokens."""
    from test_reference_tiny import _chi2_pvalue, _exact_joint

    V, T, top_k, top_p = 6, 0.8, 5, 0.95
    target, head, dec = _subset_decoder(budget=8, width=3, depth=3, vocab=V, keep=4, seed=3, sharpness=6.0)
    prompt = [1, 2, 3, 4]
    used = [dec.generate(prompt, 12, temperature=T, seed=s) for s in range(20)]
    assert sum(sum(r.accepted) - r.rounds for r in used) > 20, "the subset draft was (almost) never used"
    counts = np.zeros((V, V))
    for seed in range(2000):
        r = dec.generate(prompt, 2, temperature=T, top_k=top_k, top_p=top_p, seed=seed)
        counts[r.output_ids[0], r.output_ids[1]] += 1
    exact = _exact_joint(target, prompt, T, top_k, top_p)
    outside = [t for t in range(V) if t not in set(head.draft_vocab.token_ids.tolist())]
    assert counts[outside].sum() > 0, "tokens outside the draft vocabulary must still be sampled"
    assert _chi2_pvalue(counts, exact) > 1e-3
    assert _chi2_pvalue(counts, _exact_joint(target, prompt, 1.5, top_k, top_p)) < 1e-3


def test_decoder_refuses_a_vocabulary_that_does_not_fit():
    from test_reference_tiny import tiny_head, tiny_target

    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings

    target = tiny_target(vocab=30, seed=1)
    head = tiny_head(target, seed=2)
    head.draft_vocab = DraftVocab([1, 2, 30])
    with pytest.raises(ValueError, match="token id 30"):
        ReferenceDecoder(target, head, TreeSettings(budget=4, width=2))
    head.draft_vocab = DraftVocab([1, 2])
    with pytest.raises(ValueError, match="smaller than the tree width 3"):
        ReferenceDecoder(target, head, TreeSettings(budget=4, width=3))


# ---- the server's startup check ------------------------------------------------------------

def test_server_startup_check(tmp_path):
    from sglang_jetspec.integration.draft_vocab_setting import check_draft_vocab, mode_from_env

    assert check_draft_vocab(str(tmp_path), 50, 7, environ={}) == []  # no file
    DraftVocab([1, 2, 60]).save(str(tmp_path))
    errs = check_draft_vocab(str(tmp_path), 50, 7, environ={})
    assert any("token id 60" in e for e in errs) and any("tree width 7" in e for e in errs)
    assert check_draft_vocab(str(tmp_path), 50, 7, environ={"SGLANG_JETSPEC_DRAFT_VOCAB": "off"}) == []
    (tmp_path / FILE_NAME).write_bytes(b"junk")
    assert "not a readable" in check_draft_vocab(str(tmp_path), 50, 7, environ={})[0]
    assert "SGLANG_JETSPEC_DRAFT_VOCAB='of'" in check_draft_vocab(
        str(tmp_path), 50, 7, environ={"SGLANG_JETSPEC_DRAFT_VOCAB": "of"})[0]
    assert mode_from_env({}) == "on"


def test_round_cost_times_the_draft_both_ways_when_the_head_has_a_vocabulary():
    from sglang_jetspec.reference.round_cost import format_round_costs, measure_round_costs

    target, head, _ = _subset_decoder(vocab=50, keep=20)
    res = measure_round_costs(target, head, [1, 2, 3, 4, 5], budgets=(4,), width=3, repeats=1)
    assert res["draft_vocab"] == 20 and res["head_full_vocab_ms"] > 0 and res["head_ms"] > 0
    assert "draft vocabulary of 20 tokens" in format_round_costs(res)
    head.draft_vocab = None
    res = measure_round_costs(target, head, [1, 2, 3, 4, 5], budgets=(4,), width=3, repeats=1)
    assert "draft_vocab" not in res and res["budgets"][4]["nodes"] == 4
