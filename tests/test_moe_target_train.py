"""The pieces that make the embedded MoE target (sglang_jetspec/train/moe_target/): the fused
vocabulary loss against autograd, the balance loss, batches, router statistics, the PCA start,
and a resumed distillation run against an uninterrupted one. Tiny shapes, CPU, seconds."""

import itertools
import json
import math

import pytest
import torch

from sglang_jetspec.train.dataset import TrainSequence
from sglang_jetspec.train.feature_cache import CachedTeacher
from sglang_jetspec.train.moe_target import distill as distill_mod
from sglang_jetspec.train.moe_target.config import MoeTargetSpec, pca_embeddings
from sglang_jetspec.train.moe_target.data import batch_for_step, epoch_order, make_batch
from sglang_jetspec.train.moe_target.losses import (balance_loss, fused_vocab_grad, hard_ce, soft_kl,
                                                    vocab_loss_backward)
from sglang_jetspec.train.moe_target.router_stats import (RouterRecorder, consecutive_reuse, expert_load,
                                                          normalized_entropy, random_reuse_baseline)


def _teacher_topk(m, vocab, k, gen, sharp=3.0):
    lp = (torch.randn(m, vocab, generator=gen) * sharp).log_softmax(-1).topk(k, -1)
    return lp.indices, lp.values


@pytest.mark.parametrize("k", [1, 8, 300])
def test_fused_soft_gradient_equals_autograd(k):
    """k = 300 = V: the teacher keeps all its mass (rest 0), the clamp branch of coarse_kl."""
    g = torch.Generator().manual_seed(k)
    h, w = torch.randn(20, 16, generator=g), torch.randn(300, 16, generator=g)
    ids, lp = _teacher_topk(20, 300, k, g)
    z = (h @ w.T).requires_grad_(True)
    ref = soft_kl(z, ids, lp)
    ref.sum().backward()
    loss, grad, argmax = fused_vocab_grad(h, w, ids, lp, matmul_dtype=torch.float32)
    torch.testing.assert_close(loss, ref.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, z.grad, atol=1e-6, rtol=1e-4)
    assert torch.equal(argmax, z.detach().argmax(-1))


def test_fused_hard_gradient_equals_autograd():
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(20, 16, generator=g), torch.randn(300, 16, generator=g)
    t = torch.randint(0, 300, (20,), generator=g)
    z = (h @ w.T).requires_grad_(True)
    ref = hard_ce(z, t)
    ref.sum().backward()
    loss, grad, _ = fused_vocab_grad(h, w, targets=t, matmul_dtype=torch.float32)
    torch.testing.assert_close(loss, ref.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, z.grad, atol=1e-6, rtol=1e-4)


def test_chunked_vocab_backward_equals_autograd_of_the_row_losses():
    """Soft and hard rows spread over a padded batch, chunks smaller than the row count."""
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 7, 16, generator=g, requires_grad=True)
    head = torch.nn.Linear(16, 300, bias=False)
    soft_rows = torch.tensor([[0, 1], [0, 2], [1, 0], [1, 5]])
    ids, lp = _teacher_topk(4, 300, 5, g)
    hard_rows = torch.tensor([[0, 3], [1, 6], [0, 0]])
    targets = torch.tensor([5, 17, 299])
    scale = 1 / 7
    grad_h, stats = vocab_loss_backward(hidden, head, soft_rows, ids, lp, hard_rows, targets, scale,
                                        chunk=3, matmul_dtype=torch.float32)
    got_w = head.weight.grad.clone()
    head.weight.grad = None
    ref = (soft_kl(head(hidden[soft_rows[:, 0], soft_rows[:, 1]]), ids, lp).sum()
           + hard_ce(head(hidden[hard_rows[:, 0], hard_rows[:, 1]]), targets).sum()) * scale
    ref.backward()
    torch.testing.assert_close(grad_h, hidden.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(got_w, head.weight.grad, atol=1e-6, rtol=1e-4)
    assert stats["rows"] == 7
    assert stats["soft_kl_sum"] + stats["hard_ce_sum"] == pytest.approx(float(ref.detach()) / scale, rel=1e-5)


def test_bf16_projection_stays_close_to_fp32():
    g = torch.Generator().manual_seed(3)
    h, w = torch.randn(32, 64, generator=g), torch.randn(1000, 64, generator=g) * 0.1
    ids, lp = _teacher_topk(32, 1000, 8, g)
    l32, g32, _ = fused_vocab_grad(h, w, ids, lp, matmul_dtype=torch.float32)
    l16, g16, _ = fused_vocab_grad(h, w, ids, lp, matmul_dtype=torch.bfloat16)
    assert (l16 - l32).abs().max() < 0.05 * l32.abs().max()
    assert (g16 - g32).abs().max() < 0.05 * g32.abs().max()


def test_balance_loss_is_one_when_balanced_and_e_over_k_when_collapsed():
    e, k = 8, 2
    balanced = torch.tensor([[10.0 if j in (i % e, (i + 1) % e) else 0.0 for j in range(e)] for i in range(64)])
    assert float(balance_loss(balanced, k)) == pytest.approx(1.0, abs=0.01)
    collapsed = torch.zeros(64, e)
    collapsed[:, :2] = 30.0
    assert float(balance_loss(collapsed, k)) == pytest.approx(e / k, rel=1e-3)
    logits = torch.randn(64, e, requires_grad=True)
    balance_loss(logits, k).backward()
    assert logits.grad.abs().sum() > 0  # the router gets a gradient from it


def test_epoch_batches_cover_every_sequence_once_and_are_pure():
    lengths = [5 + (i * 37) % 50 for i in range(45)]
    batches = epoch_order(lengths, 4, seed=3, epoch=1)
    flat = sorted(itertools.chain.from_iterable(batches))
    assert flat == list(range(45))
    assert epoch_order(lengths, 4, seed=3, epoch=1) == batches
    assert epoch_order(lengths, 4, seed=3, epoch=2) != batches
    per_epoch = len(batches)
    assert batch_for_step(lengths, 4, 3, per_epoch + 2) == batches[2]


def test_make_batch_marks_cached_rows_soft_and_the_rest_hard():
    a = TrainSequence(torch.tensor([1, 2, 3, 4, 5, 6]), prompt_len=3)
    b = TrainSequence(torch.tensor([7, 8, 9, 10]), prompt_len=2)
    # teacher rows of `a`: prompt_len .. T-2 = 3, 4 (the cache layout)
    ta = CachedTeacher(3, torch.tensor([[5, 0], [6, 0]]), torch.tensor([[-0.1, -3.0], [-0.2, -3.0]]))
    batch = make_batch([a, b], [ta, None], pad_id=0)
    assert batch.ids.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 0, 0]]
    assert batch.attention.sum() == 10
    assert batch.soft_rows.tolist() == [[0, 3], [0, 4]]
    assert batch.soft_ids.tolist() == [[5, 0], [6, 0]]
    # row 2 of a predicts its first answer token (not cached); b has no teacher: rows 1, 2
    assert batch.hard_rows.tolist() == [[0, 2], [1, 1], [1, 2]]
    assert batch.hard_targets.tolist() == [4, 9, 10]


def test_router_statistics_on_hand_made_routes():
    ids = torch.tensor([[0, 1], [1, 2], [1, 2], [3, 4], [4, 3]])
    any_rate, all_rate, pairs = consecutive_reuse(ids)
    assert pairs == 4
    assert any_rate == pytest.approx(3 / 4)  # (0,1)->(1,2), (1,2)->(1,2), (3,4)->(4,3)
    assert all_rate == pytest.approx(2 / 4)  # order inside a top-k set does not matter
    assert normalized_entropy(torch.full((8,), 1 / 8)) == pytest.approx(1.0)
    assert normalized_entropy(expert_load(torch.tensor([[0, 1]] * 10), 8)) == pytest.approx(math.log(2) / math.log(8))


def test_random_reuse_baseline_matches_enumeration():
    e, k = 6, 2
    sets = list(itertools.combinations(range(e), k))
    any_n = sum(bool(set(a) & set(b)) for a in sets for b in sets)
    all_n = sum(a == b for a in sets for b in sets)
    assert random_reuse_baseline(e, k) == pytest.approx((any_n / len(sets) ** 2, all_n / len(sets) ** 2))


def test_router_recorder_keeps_sequences_apart():
    """Reuse is counted between neighbours of one sequence, never across two sequences."""
    rec = RouterRecorder(num_layers=1, num_experts=8, top_k=2)
    onehot = lambda experts: torch.stack([torch.nn.functional.one_hot(torch.tensor(e), 8).float() * 5  # noqa: E731
                                          + torch.nn.functional.one_hot(torch.tensor((e + 1) % 8), 8) * 4
                                          for e in experts])
    rec.add_sequence([onehot([0, 0, 0])])
    rec.add_sequence([onehot([4, 4])])
    st = rec.result()
    assert st.tokens == 5
    assert st.reuse_all == [1.0]  # the 0 -> 4 boundary is not a pair
    assert st.load[0][0] == pytest.approx(0.3) and st.load[0][4] == pytest.approx(0.2)


def test_pca_embeddings_keep_the_inner_products_of_a_low_rank_table():
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(200, 6, generator=g) @ torch.randn(6, 40, generator=g)  # rank 6, dim 40
    proj = pca_embeddings(emb, 8)
    assert proj.shape == (200, 8)
    gram, pgram = emb @ emb.T, proj @ proj.T
    scale = float((gram * pgram).sum() / (pgram * pgram).sum())
    torch.testing.assert_close(pgram * scale, gram, atol=1e-3 * float(gram.abs().max()), rtol=0)
    with pytest.raises(ValueError, match="hidden_size 41"):
        pca_embeddings(emb, 41)


def test_spec_refuses_fewer_than_eight_experts():
    with pytest.raises(ValueError, match="num_experts 4 must be >= 8"):
        MoeTargetSpec(num_experts=4)


# ---- a whole (tiny) distillation run: resumed == uninterrupted ------------------------------

TINY = MoeTargetSpec(hidden_size=24, num_layers=2, num_experts=8, top_k=2, moe_intermediate_size=16,
                     num_heads=2, num_kv_heads=1, head_dim=12, max_position_embeddings=128)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("moe_distill")
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1, bos_token_id=1,
                                           eos_token_id=2, pad_token_id=2, tie_word_embeddings=True))
    teacher.save_pretrained(root / "teacher")
    data = root / "data"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    with open(data / "shard_00000.jsonl", "w") as f:
        for i in range(40):
            prompt = torch.randint(3, 96, (int(torch.randint(3, 8, (1,), generator=g)),), generator=g).tolist()
            answer = torch.randint(3, 96, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
            f.write(json.dumps({"prompt": f"p{i}", "prompt_ids": prompt, "output_ids": answer + [2],
                                "finish": "stop"}) + "\n")
    return root


def _settings(root, run, **kw):
    return distill_mod.DistillSettings(run_dir=str(root / run), teacher_dir=str(root / "teacher"),
                                       data_dirs=[str(root / "data")], steps=4, seqs_per_step=4,
                                       warmup_steps=1, eval_every=0, save_every=1, spec=TINY, **kw)


def test_resumed_run_equals_uninterrupted_run(tiny_setup, monkeypatch):
    distill_mod.train(_settings(tiny_setup, "straight"), log=lambda m: None)
    straight, st = distill_mod.load_run(str(tiny_setup / "straight"))
    assert st["step"] == 4

    clock = itertools.count(0, 20.0)  # every time.time() call advances 20 s: the budget ends the run early
    monkeypatch.setattr(distill_mod.time, "time", lambda: next(clock))
    distill_mod.train(_settings(tiny_setup, "resumed", time_budget_min=1.0), log=lambda m: None)
    _, first = distill_mod.load_run(str(tiny_setup / "resumed"))
    assert 0 < first["step"] < 4
    monkeypatch.undo()
    distill_mod.train(_settings(tiny_setup, "resumed"), log=lambda m: None)
    resumed, st2 = distill_mod.load_run(str(tiny_setup / "resumed"))
    assert st2["step"] == 4
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    log = [json.loads(x) for x in open(tiny_setup / "resumed" / distill_mod.LOG_NAME)]
    assert [r["step"] for r in log] == [1, 2, 3, 4]


def test_resume_refuses_another_recipe(tiny_setup):
    with pytest.raises(ValueError, match="other settings"):
        distill_mod.train(_settings(tiny_setup, "straight", lr=1e-4), log=lambda m: None)
