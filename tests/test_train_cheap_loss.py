"""The cheap CPU loss (top-k teacher, candidate vocabulary, feature cache) against the exact
full-vocabulary forward KL, in the limits where they must agree, plus the cache's bookkeeping."""

import json

import pytest
import torch

from sglang_jetspec.train.feature_cache import FeatureCache, build_missing
from sglang_jetspec.train.head_init import build_head
from sglang_jetspec.train.loss import CheapLoss, DraftForTraining, block_loss, forward_kl
from sglang_jetspec.train.teacher import FrozenTarget
from sglang_jetspec.train.topk_loss import TopKTeacher, pick_candidates, topk_kl_candidates, topk_kl_full

from test_train import BLOCK, MASK, VOCAB, tiny_seqs, tiny_target  # noqa: F401 (fixtures)


def _rows(m=6, d=16, v=200, seed=0, sharp=3.0):
    g = torch.Generator().manual_seed(seed)
    lm = torch.nn.Linear(d, v, bias=False)
    torch.nn.init.normal_(lm.weight, generator=g)
    hidden = torch.randn(m, d, generator=g)
    teacher = torch.log_softmax(torch.randn(m, v, generator=g) * sharp, -1)
    return lm, hidden, teacher


def test_topk_kl_with_every_token_is_the_exact_forward_kl():
    lm, hidden, teacher = _rows(v=50)
    t = TopKTeacher.from_logprobs(teacher, 50)
    kl, logits = topk_kl_full(hidden, lm, t.ids, t.logprobs)
    assert torch.allclose(kl, forward_kl(lm(hidden), teacher), atol=1e-4)


def test_coarse_kl_is_a_lower_bound_and_close_for_a_sharp_teacher():
    lm, hidden, teacher = _rows(sharp=6.0)
    exact = forward_kl(lm(hidden), teacher)
    t = TopKTeacher.from_logprobs(teacher, 8)
    kl, _ = topk_kl_full(hidden, lm, t.ids, t.logprobs)
    assert (kl <= exact + 1e-4).all()  # coarse-graining never increases a KL
    assert (kl >= 0.8 * exact).all(), (kl, exact)  # the top-8 hold most of a sharp teacher's mass


def test_candidates_covering_the_vocabulary_give_the_exact_loss_and_gradient():
    lm, hidden, teacher = _rows()
    t = TopKTeacher.from_logprobs(teacher, 4)
    h1, h2 = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
    full, _ = topk_kl_full(h1, lm, t.ids, t.logprobs)
    cand, logits, c = topk_kl_candidates(h2, lm, t.ids, t.logprobs, total=10_000)
    assert logits.shape == (6, 200) and c.ids.tolist() == list(range(200))
    full.sum().backward()
    cand.sum().backward()
    assert torch.allclose(full, cand, atol=1e-5)
    assert torch.allclose(h1.grad, h2.grad, atol=1e-5)


def test_sampled_negatives_estimate_the_normaliser():
    """Union + weighted uniform negatives: log Z off by little, KL close to the exact top-k KL."""
    lm, hidden, teacher = _rows(v=2000, sharp=4.0)
    t = TopKTeacher.from_logprobs(teacher, 8)
    exact, logits = topk_kl_full(hidden, lm, t.ids, t.logprobs)
    ests = []
    for s in range(20):
        kl, _, c = topk_kl_candidates(hidden, lm, t.ids, t.logprobs, 600, torch.Generator().manual_seed(s))
        assert len(c.ids) == 600 and c.union_size == len(torch.unique(t.ids))
        assert c.ids.unique().numel() == 600  # distinct
        ests.append(kl)
    mean = torch.stack(ests).mean(0)
    assert torch.allclose(mean, exact, rtol=0.1, atol=0.05), (mean, exact)


def test_pick_candidates_rejects_a_bad_size_and_keeps_a_large_union():
    with pytest.raises(ValueError, match="loss vocabulary 0"):
        pick_candidates(torch.tensor([1, 2]), 10, 0)
    c = pick_candidates(torch.arange(8), 50, 4)
    assert c.ids.tolist() == list(range(8)) and (c.log_weight == 0).all()


# ---- block_loss integration ---------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    return tiny_target()


def _setup(model, n=2):
    head = build_head(model, num_layers=2, block_size=BLOCK, mask_token_id=MASK, init_from_target=False, seed=0)
    seqs = tiny_seqs(n)
    anchors = torch.stack([torch.tensor([q.prompt_len, q.prompt_len + 3, len(q.ids) - 3]) for q in seqs])
    return head, seqs, anchors, torch.ones_like(anchors, dtype=torch.bool)


def test_block_loss_topk_of_the_whole_vocabulary_equals_the_exact_loss(model):
    head, seqs, anchors, valid = _setup(model)
    target = FrozenTarget(model)
    exact = block_loss(DraftForTraining(head), head.config, target, seqs, anchors, valid)
    cheap = block_loss(DraftForTraining(head), head.config, target, seqs, anchors, valid,
                       cheap=CheapLoss(teacher_topk=VOCAB, loss_vocab=VOCAB))
    assert torch.allclose(exact.loss, cheap.loss, atol=1e-5)
    assert exact.correct.tolist() == cheap.correct.tolist()


def test_feature_cache_reproduces_the_online_teacher(model, tmp_path):
    head, seqs, anchors, valid = _setup(model)
    target = FrozenTarget(model)
    cache = FeatureCache.open(str(tmp_path), head.config.target_layer_ids, 6, "tiny")
    assert build_missing(cache, target, seqs, chunk_size=1, progress=False) == 2
    assert build_missing(cache, target, seqs, progress=False) == 0  # nothing left to add
    reopened = FeatureCache.open(str(tmp_path), head.config.target_layer_ids, 6, "tiny")
    assert len(reopened) == 2 and seqs[0].ids in reopened
    online = block_loss(DraftForTraining(head), head.config, target, seqs, anchors, valid,
                        cheap=CheapLoss(teacher_topk=6))
    cached = block_loss(DraftForTraining(head), head.config, target, seqs, anchors, valid,
                        cheap=CheapLoss(cache=reopened))
    assert torch.allclose(online.loss, cached.loss, atol=1e-3)  # features stored in fp16
    assert FeatureCache.open(str(tmp_path), head.config.target_layer_ids, 4, "tiny").topk == 6  # keeps its k
    with pytest.raises(ValueError, match="topk"):
        FeatureCache.open(str(tmp_path), head.config.target_layer_ids, 8, "tiny")
    with pytest.raises(ValueError, match="layer_ids"):
        FeatureCache.open(str(tmp_path), [0], 6, "tiny")
    with pytest.raises(KeyError, match="not in feature cache"):
        reopened.get(torch.arange(5))


def test_feature_cache_serves_a_subset_of_its_taps_in_any_order(model, tmp_path):
    target = FrozenTarget(model)
    seqs = tiny_seqs(2)
    n = model.config.num_hidden_layers
    stored, wanted = [0, 1, n - 1], [n - 1, 0]
    cache = FeatureCache.open(str(tmp_path), stored, 4, "tiny")
    build_missing(cache, target, seqs, progress=False)
    sub = FeatureCache.open(str(tmp_path), wanted, 4, "tiny")  # a head with fewer taps reads the same folder
    assert sub.layer_ids == stored and sub.serve_layer_ids == wanted
    for q in seqs:
        want, _ = target.features_and_teacher(q.ids, wanted, torch.arange(q.prompt_len, len(q.ids) - 1))
        got, teacher = sub.get(q.ids)
        assert got.shape == want.shape
        assert torch.allclose(got, want.half().float())  # the stored fp16 columns of those taps, reordered
        assert torch.equal(teacher.ids, cache.get(q.ids)[1].ids)
    assert torch.equal(FeatureCache.open(str(tmp_path), stored, 4, "tiny").get(seqs[0].ids)[0],
                       cache.get(seqs[0].ids)[0])  # the full tap list is served unchanged
    with pytest.raises(ValueError, match=r"layer_ids.*or a superset"):
        FeatureCache.open(str(tmp_path), [0, 2], 4, "tiny")  # tap 2 is not stored
    with pytest.raises(ValueError, match="cannot serve"):
        FeatureCache(str(tmp_path), stored, 4, serve_layer_ids=[2])


def test_feature_cache_knows_one_model_folder_by_any_spelling(tmp_path, monkeypatch):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "other").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "models" / "tiny")
    cache = tmp_path / "cache"
    FeatureCache.open(str(cache), [0], 4, str(tmp_path / "models" / "tiny"))
    monkeypatch.chdir(tmp_path)
    for spelling in ("models/tiny", "./models/../models/tiny", "link"):
        assert FeatureCache.open(str(cache), [0], 4, spelling).topk == 4
    with pytest.raises(ValueError, match="model"):
        FeatureCache.open(str(cache), [0], 4, "models/other")
    with pytest.raises(ValueError, match="model"):
        FeatureCache.open(str(cache), [0], 4, "tiny")  # a name, not that folder


# ---- command line ---------------------------------------------------------------------------

from test_train import tiny_data, tiny_model_dir  # noqa: E402,F401  (fixtures)


def _cache_cli(model_dir, data, cache) -> list[str]:
    """launch.train_head flags of a one-layer head on the tiny model and data, with a feature cache."""
    return ["--model", str(model_dir), "--data", str(data), "--num-layers", "1", "--block-size", "4",
            "--anchors-per-seq", "4", "--val-percent", "40", "--val-seqs", "2", "--val-anchors", "4",
            "--no-progress", "--threads", "1", "--eval-every", "0", "--feature-cache", str(cache)]


def test_train_command_line_builds_and_uses_the_cache(tiny_model_dir, tiny_data, tmp_path, capsys):
    from launch.train_head import main as train_main

    data, _ = tiny_data
    cache = tmp_path / "fcache"
    common = _cache_cli(tiny_model_dir, data, cache)
    train_main(common + ["--out", str(tmp_path / "a"), "--cache-only"])
    first = capsys.readouterr().out
    assert "sequences added" in first and not (tmp_path / "a" / "trainer_state.pt").exists()
    n_chunks = len(list(cache.glob("chunk_*.pt")))
    train_main(common + ["--out", str(tmp_path / "b"), "--steps", "2", "--loss-vocab", "64", "--teacher-topk", "8"])
    assert "0 sequences added" in capsys.readouterr().out
    assert len(list(cache.glob("chunk_*.pt"))) == n_chunks  # reused, not rebuilt
    log = [json.loads(x) for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] > 0 for r in log)


def test_cache_shards_fill_one_folder_side_by_side(tiny_model_dir, tiny_data, tmp_path, capsys):
    """--cache-shard K/N builds every N-th sequence; N builders write one folder without clashing
    chunk names, and together they leave nothing for training to add."""
    from launch.train_head import main as train_main

    data, _ = tiny_data
    cache = tmp_path / "fcache"
    common = _cache_cli(tiny_model_dir, data, cache)
    added = []
    for k in (0, 1):
        train_main(common + ["--out", str(tmp_path / "a"), "--cache-only", "--cache-shard", f"{k}/2"])
        added.append(int(capsys.readouterr().out.split("[feature cache]")[1].split(":")[1].split()[0]))
    assert min(added) >= 1  # each shard built its own part
    assert len(set(p.name for p in cache.glob("chunk_*.pt"))) == 2  # the second builder did not overwrite
    train_main(common + ["--out", str(tmp_path / "b"), "--steps", "1", "--loss-vocab", "64", "--teacher-topk", "8"])
    assert f"0 sequences added, {sum(added)} cached" in capsys.readouterr().out


@pytest.mark.parametrize("bad, message", [
    (["--cache-shard", "2/2", "--cache-only"], "0 <= K < N"),
    (["--cache-shard", "x", "--cache-only"], "expected K/N"),
])
def test_cache_shard_values_are_checked(bad, message, tmp_path, capsys):
    from launch.train_head import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--feature-cache", str(tmp_path)] + bad)
    assert message in capsys.readouterr().err


def test_cache_shard_without_cache_only_is_refused(tiny_model_dir, tiny_data, tmp_path):
    from launch.train_head import main as train_main

    data, _ = tiny_data
    with pytest.raises(SystemExit, match="--cache-shard 0/2 builds part of a cache"):
        train_main(["--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "o"),
                    "--feature-cache", str(tmp_path / "c"), "--cache-shard", "0/2"])


# ---- initialisation -------------------------------------------------------------------------

@torch.no_grad()
def test_qk_scale_init_gives_copied_layers_the_target_logit_scale(model):
    """After match_qk_scale, a copied layer's per-head normalised q.k logits have the size of
    the target layer's raw ones (gains of 1 give whatever scale unit-RMS q and k give)."""
    from sglang_jetspec.train.head_init import match_qk_scale

    seq = tiny_seqs(1, answer=40)[0]
    head = build_head(model, num_layers=2, block_size=BLOCK, mask_token_id=MASK, init_from_target=True)
    hidden = model(seq.ids[None], output_hidden_states=True).hidden_states
    x = model.model.layers[3].input_layernorm(hidden[3][0])  # layer 3 = the head's layer 1

    def logit_size(att, q_norm, k_norm):
        q = att.q_proj(x).view(len(x), -1, 8)
        k = att.k_proj(x).view(len(x), -1, 8)
        q, k = (q_norm(q), k_norm(k)) if q_norm else (q, k)
        return float((q[:, :2] @ k[:, :1].transpose(0, 1).transpose(1, 2)).abs().mean())  # heads 0,1 / kv 0

    hl = head.layers[1].self_attn
    want = logit_size(model.model.layers[3].self_attn, None, None)
    before = logit_size(hl, hl.q_norm, hl.k_norm)
    gains = match_qk_scale(head, model, seq.ids, [2, 3])
    after = logit_size(hl, hl.q_norm, hl.k_norm)
    assert len(gains) == 4 and float(hl.q_norm.weight[0]) == pytest.approx(gains[2])
    assert abs(after / want - 1) < abs(before / want - 1), (before, after, want)
    assert 0.5 < after / want < 2.0, (after, want)
