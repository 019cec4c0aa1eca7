"""Head training pipeline on a tiny random Llama target: the objective's bookkeeping (teacher
rows, masks, ends), the learning itself, checkpoints in the published layout, exact resume,
and the two command lines end to end."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sglang_jetspec.core.checkpoint import load_head
from sglang_jetspec.core.head import DraftHead
from sglang_jetspec.train.dataset import TrainSequence, is_validation, sample_anchors, split_validation
from sglang_jetspec.train.head_init import build_head
from sglang_jetspec.train.loss import (DraftForTraining, TeacherSummary, block_layout, block_loss,
                                       depth_weights, forward_kl)
from sglang_jetspec.train.ngram import NgramTable
from sglang_jetspec.train.teacher import FrozenTarget
from sglang_jetspec.train.trainer import TrainConfig, Trainer


VOCAB, MASK, BLOCK = 61, 3, 5


def tiny_target(seed=0, vocab=VOCAB):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True,
                      max_position_embeddings=256, rms_norm_eps=1e-5)
    return LlamaForCausalLM(cfg).eval()


def tiny_seqs(n=3, seed=1, prompt=6, answer=14):
    g = torch.Generator().manual_seed(seed)
    return [TrainSequence(torch.randint(4, VOCAB, (prompt + answer + i,), generator=g), prompt, f"p{i}")
            for i in range(n)]


@pytest.fixture(scope="module")
def model():
    return tiny_target()


def _head(model, init=True, causal=True, seed=0):
    return build_head(model, num_layers=2, block_size=BLOCK, causal=causal, mask_token_id=MASK,
                      init_from_target=init, seed=seed)


# ---- data and anchors -----------------------------------------------------------------------

def test_anchors_lie_in_the_answer_and_pad_invalid():
    seq = TrainSequence(torch.arange(10), prompt_len=6)  # anchor positions 6, 7, 8
    a, v = sample_anchors(seq, 2, torch.Generator().manual_seed(0))
    assert len(set(a.tolist())) == 2 and all(6 <= x <= 8 for x in a.tolist()) and v.all()
    a, v = sample_anchors(seq, 5, torch.Generator().manual_seed(0))
    assert sorted(a[v].tolist()) == [6, 7, 8] and v.tolist() == [True] * 3 + [False] * 2


def test_validation_split_is_stable_by_prompt():
    seqs = [TrainSequence(torch.arange(5), 2, f"prompt {i}") for i in range(200)]
    train, val = split_validation(seqs, 10.0)
    assert 5 <= len(val) <= 40 and len(train) + len(val) == 200
    assert all(is_validation(s.prompt, 10.0) for s in val)
    assert split_validation(seqs[::-1], 10.0)[1] == val[::-1]  # membership does not depend on order


def test_bigram_table_learns_a_deterministic_chain():
    seq = TrainSequence(torch.tensor([0, 1] + [5, 6, 7, 8] * 5), prompt_len=2)
    assert NgramTable([seq], 2).accuracy([seq]) == 1.0
    assert NgramTable([seq], 1).accuracy([seq]) < 0.5


# ---- the objective --------------------------------------------------------------------------

def test_layout_teacher_row_is_previous_position_and_ends_are_masked():
    anchors = torch.tensor([[6, 16]])
    lay = block_layout(anchors, torch.tensor([[True, True]]), torch.tensor([20]), BLOCK)
    assert lay.target_pos[0, 0].tolist() == [7, 8, 9, 10]          # slot i predicts a + i
    assert lay.teacher_pos[0, 0].tolist() == [6, 7, 8, 9]          # from the row at a + i - 1
    assert lay.valid[0, 1].tolist() == [True, True, True, False]   # 16 + 4 = 20 is past the end
    assert depth_weights(4, 0).tolist() == [1, 1, 1, 1]
    assert torch.allclose(depth_weights(3, 2.0), torch.exp(-torch.tensor([0, 0.5, 1.0])))


def test_fast_kl_matches_plain_kl():
    torch.manual_seed(0)
    lm = torch.nn.Linear(16, 50, bias=True)
    hidden = torch.randn(7, 16)
    teacher = torch.log_softmax(torch.randn(4, 50) * 3, -1)
    rows = torch.tensor([0, 3, 3, 1, 2, 0, 1])
    fast = TeacherSummary.from_logprobs(teacher, lm).kl(hidden, lm(hidden), rows)
    plain = forward_kl(lm(hidden), teacher[rows])
    assert torch.allclose(fast, plain, atol=1e-4) and (plain > 0).all()


@torch.no_grad()
def test_block_loss_matches_a_direct_per_anchor_computation(model):
    """Slot i of anchor a is graded against the target's row at a+i-1, sees only context < a,
    and slots past the end are left out, checked against one plain head call per anchor."""
    target, head = FrozenTarget(model), _head(model, init=False)
    seq = tiny_seqs(1)[0]
    T = len(seq.ids)
    anchors = torch.tensor([[seq.prompt_len, T - 3]])  # the second block runs past the end
    res = block_loss(DraftForTraining(head), head.config, target, [seq], anchors, torch.ones(1, 2, dtype=torch.bool))
    full = torch.log_softmax(model(seq.ids[None]).logits[0], -1)  # [T, V]
    feats = torch.cat([model(seq.ids[None], output_hidden_states=True).hidden_states[i + 1][0]
                       for i in head.config.target_layer_ids], -1)
    kls, count = torch.zeros(BLOCK - 1), torch.zeros(BLOCK - 1)
    for a in anchors[0].tolist():
        block = torch.tensor([seq.ids[a]] + [MASK] * (BLOCK - 1))
        h = head(target.embed(block)[None], torch.arange(a, a + BLOCK)[None],
                 head.project_context(feats[None, :a]), torch.arange(a)[None])[0]  # default causal mask
        for i in range(1, BLOCK):
            if a + i < T:
                kls[i - 1] += forward_kl(target.logits(h[i])[None], full[a + i - 1][None])[0]
                count[i - 1] += 1
    assert count.tolist() == [2, 2, 1, 1]  # anchor T-3 only has targets T-2, T-1
    assert res.count.tolist() == count.tolist()
    assert torch.allclose(res.kl_sum, kls, atol=1e-4)
    assert torch.allclose(res.loss, kls.sum() / count.sum(), atol=1e-5)


def test_batched_teacher_pass_matches_one_pass_per_sequence(model):
    """The GPU path (one right-padded target forward for the whole step) gives the loss and
    statistics of the per-sequence path, on sequences of different lengths."""
    target, head = FrozenTarget(model), _head(model, init=False)
    seqs = tiny_seqs(3)
    g = torch.Generator().manual_seed(5)
    anchors, valid = zip(*(sample_anchors(q, 4, g) for q in seqs))
    anchors, valid = torch.stack(anchors), torch.stack(valid)
    one = block_loss(DraftForTraining(head), head.config, target, seqs, anchors, valid, batch_teacher=False)
    many = block_loss(DraftForTraining(head), head.config, target, seqs, anchors, valid, batch_teacher=True)
    assert torch.allclose(one.loss, many.loss, atol=1e-5)
    assert torch.allclose(one.kl_sum, many.kl_sum, atol=1e-4)
    assert one.count.tolist() == many.count.tolist()


def test_bidirectional_slots_see_later_slots_causal_ones_do_not(model):
    target, seq = FrozenTarget(model), tiny_seqs(1)[0]
    anchors, valid = torch.tensor([[8]]), torch.ones(1, 1, dtype=torch.bool)
    hidden = {}
    for causal in (True, False):
        head = build_head(model, num_layers=1, block_size=BLOCK, causal=causal, mask_token_id=MASK,
                          init_from_target=False, seed=0)  # same weights, other mask
        mod = DraftForTraining(head)
        mod.register_forward_hook(lambda m, i, o, c=causal: hidden.__setitem__(c, o[0].detach()))
        block_loss(mod, head.config, target, [seq], anchors, valid)
    assert torch.allclose(hidden[True][-1], hidden[False][-1], atol=1e-5)  # 1 layer: last slot sees the same
    assert not torch.allclose(hidden[True][1], hidden[False][1], atol=1e-3)  # slot 1 differs


# ---- head init ------------------------------------------------------------------------------

def test_init_copies_the_last_target_layers(model):
    head = _head(model, init=True)
    L = model.config.num_hidden_layers
    for j, i in enumerate((L - 2, L - 1)):
        assert torch.equal(head.layers[j].self_attn.q_proj.weight, model.model.layers[i].self_attn.q_proj.weight)
        assert torch.equal(head.layers[j].mlp.down_proj.weight, model.model.layers[i].mlp.down_proj.weight)
        assert torch.equal(head.layers[j].post_attention_layernorm.weight,
                           model.model.layers[i].post_attention_layernorm.weight)
        assert torch.equal(head.layers[j].self_attn.q_norm.weight, torch.ones(8))
    assert torch.equal(head.norm.weight, model.model.norm.weight)
    assert head.config.rope_theta == model.config.rope_parameters["rope_theta"]
    # fc starts as "take the deepest tapped layer"
    x = torch.randn(3, head.config.num_target_features)
    k = head.config.target_layer_ids.index(max(head.config.target_layer_ids))
    assert torch.allclose(head.fc(x), x[:, 32 * k: 32 * (k + 1)])


def test_init_refuses_a_head_of_another_shape(model):
    from sglang_jetspec.core.head_config import HeadConfig
    from sglang_jetspec.train.head_init import init_head_from_target

    cfg = HeadConfig.for_target(32, 4, VOCAB, num_layers=2, intermediate_size=48, mask_token_id=MASK)
    with pytest.raises(ValueError, match="cannot initialise head layers.0"):
        init_head_from_target(DraftHead(cfg), model)


@torch.no_grad()
def test_recency_init_points_mask_slots_at_latest_context_and_anchor():
    """Layer 0 after init_recency_attention: for a MASK slot, kv group 0's heads put most weight on
    the latest context position, kv group 1's heads on the anchor; MASK keys are 0."""
    from sglang_jetspec.core.head import apply_rotary, rotary_cos_sin

    torch.manual_seed(0)  # rotary needs many frequency pairs for a clean recency: head_dim 32
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                         head_dim=32, max_position_embeddings=256)).eval()
    seq = tiny_seqs(1, answer=60)[0]
    head = build_head(model, num_layers=2, block_size=BLOCK, mask_token_id=MASK, init_from_target=False,
                      recency_init=True, calib_ids=seq.ids, recency_gain=3.0)
    cfg, att = head.config, head.layers[0].self_attn
    a = 50
    feats = torch.cat([model(seq.ids[None], output_hidden_states=True).hidden_states[i + 1][0]
                       for i in cfg.target_layer_ids], -1)
    ctx = head.project_context(feats[None, :a])
    block = torch.tensor([int(seq.ids[a])] + [MASK] * (BLOCK - 1))
    x = head.layers[0].input_layernorm(model.get_input_embeddings()(block)[None])  # [1, S, d]
    qr = rotary_cos_sin(torch.arange(a, a + BLOCK)[None], cfg.head_dim, cfg.rope_theta, torch.float32)
    q = apply_rotary(att.q_norm(att.q_proj(x).view(1, BLOCK, 4, 32)), *qr)
    kb = apply_rotary(att.k_norm(att.k_proj(x).view(1, BLOCK, 2, 32)), *qr)
    kc, _ = att.context_kv(ctx, rotary_cos_sin(torch.arange(a)[None], cfg.head_dim, cfg.rope_theta, torch.float32))
    assert torch.allclose(kb[0, 1:], torch.zeros(BLOCK - 1, 2, 32), atol=1e-3)  # MASK keys vanish
    keys = torch.cat([kc, kb[:, :2]], 1)[0]  # context, anchor, slot 1 itself
    for h, want in ((0, a - 1), (2, a)):  # q head 0 -> kv group 0 (latest context), 2 -> group 1 (anchor)
        w = (keys[:, h // 2] @ q[0, 1, h] / 32 ** 0.5).softmax(0)
        assert int(w.argmax()) == want and w[want] > 0.5, (h, w.topk(3))


# ---- training, checkpoints, resume ----------------------------------------------------------

def _trainer(model, out, steps, seqs, anchors=16, lr=3e-3, seed=0):
    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=2, anchors_per_seq=anchors, seqs_per_step=1,
                      eval_every=0, save_every=0, seed=seed)
    return Trainer(cfg, FrozenTarget(model), _head(model, init=True), seqs, str(out), progress=False)


def test_loss_falls_on_a_fixed_batch(model, tmp_path):
    seqs = tiny_seqs(1)  # one sequence, anchors at all 14 positions: the same batch each step
    tr = _trainer(model, tmp_path, 30, seqs, anchors=16)
    losses = tr.run()
    assert len(losses) == 30
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses


def test_checkpoint_is_published_layout_and_loads(model, tmp_path):
    tr = _trainer(model, tmp_path, 2, tiny_seqs(2))
    tr.run()
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["dflash_config"]["causal_head"] is True and cfg["dflash_config"]["mask_token_id"] == MASK
    assert cfg["block_size"] == BLOCK
    head = load_head(str(tmp_path))
    for k, v in tr.head.state_dict().items():
        assert torch.equal(head.state_dict()[k], v), k


def test_resume_continues_with_the_same_next_loss(model, tmp_path):
    seqs = tiny_seqs(3)
    straight = _trainer(model, tmp_path / "a", 5, seqs, anchors=4)
    want = [float(straight.train_step().loss.detach()) for _ in range(4)]
    first = _trainer(model, tmp_path / "b", 5, seqs, anchors=4)
    got = [float(first.train_step().loss.detach()) for _ in range(2)]
    first.save()
    second = _trainer(model, tmp_path / "b", 5, seqs, anchors=4, seed=0)
    assert second.resume() == 2
    got += [float(second.train_step().loss.detach()) for _ in range(2)]
    assert got == want
    assert second.scheduler.get_last_lr() == straight.scheduler.get_last_lr()


def test_stop_at_ends_partway_through_the_full_schedule_and_resume_finishes_it(model, tmp_path):
    seqs = tiny_seqs(3)
    straight = _trainer(model, tmp_path / "a", 6, seqs, anchors=4)
    want = [float(straight.train_step().loss.detach()) for _ in range(6)]
    part = _trainer(model, tmp_path / "b", 6, seqs, anchors=4)
    part.cfg.stop_at = 3
    got = part.run()
    assert part.step == 3 and got == want[:3]
    lr_at_3 = part.scheduler.get_last_lr()
    assert lr_at_3[0] > 0.5 * 3e-3  # the 6-step cosine is still high at step 3 (a 3-step one would end at 0.1x)
    rest = _trainer(model, tmp_path / "b", 6, seqs, anchors=4)
    assert rest.resume() == 3 and rest.scheduler.get_last_lr() == lr_at_3
    assert rest.run() == want[3:]
    assert rest.scheduler.get_last_lr() == straight.scheduler.get_last_lr()


def test_stop_at_beyond_the_schedule_is_refused():
    with pytest.raises(ValueError, match="stop_at 7 must be between 0 .off. and steps 6"):
        TrainConfig(steps=6, stop_at=7).validate()


# ---- the command lines end to end -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_dir):
    """A tiny random Llama with SmolLM2's tokenizer (so prompts, chat template and MASK are real)."""
    import shutil

    folder = tmp_path_factory.mktemp("tiny_target")
    for f in smollm2_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
            shutil.copy(f, folder / f.name)
    tiny_target(vocab=49152).save_pretrained(folder)
    return folder


def write_random_regen(folder) -> None:
    """Six regenerated-answer records of random token ids (8-token prompts, 24-token answers)."""
    from sglang_jetspec.train.regen_store import ShardWriter

    g = torch.Generator().manual_seed(0)
    with ShardWriter(folder) as w:
        w.write([{"prompt": f"question {i}", "prompt_ids": torch.randint(20, 900, (8,), generator=g).tolist(),
                  "output_ids": torch.randint(20, 900, (24,), generator=g).tolist(), "finish": "length"}
                 for i in range(6)])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("regen")
    write_random_regen(folder)
    prompts = folder / "heldout.jsonl"
    prompts.write_text('{"prompt": "What is 2 + 2?"}\n{"prompt": "Say hi."}\n')
    return folder, prompts


def test_train_and_eval_command_lines(tiny_model_dir, tiny_data, tmp_path, capsys):
    from launch.eval_head import main as eval_main
    from launch.train_head import main as train_main

    data, prompts = tiny_data
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--num-layers", "1", "--block-size", "4",
              "--anchors-per-seq", "4", "--val-percent", "40", "--val-seqs", "2", "--val-anchors", "4",
              "--eval-prompts", str(prompts), "--eval-num-prompts", "1", "--eval-max-new-tokens", "6",
              "--eval-budget", "6", "--no-progress", "--threads", "1"]
    train_main(common + ["--out", str(tmp_path / "causal"), "--steps", "3", "--eval-every", "2"])
    train_main(common + ["--out", str(tmp_path / "bidir"), "--steps", "1", "--eval-every", "0", "--bidirectional"])
    log = [json.loads(x) for x in (tmp_path / "causal" / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval" in r]
    assert [r["step"] for r in evals] == [0, 2]
    assert {"acc1", "2gram_acc", "tau_heldout@6"} <= set(evals[-1]["eval"])
    assert evals[-1]["eval"]["tau_heldout@6"] >= 1.0
    assert load_head(str(tmp_path / "bidir")).config.causal_head is False

    # resume: continue the causal run to step 4 (the schedule's total grows with --steps)
    train_main(common + ["--out", str(tmp_path / "causal"), "--steps", "4", "--eval-every", "0", "--resume"])
    assert "resuming" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--resume"):
        train_main(common + ["--out", str(tmp_path / "causal"), "--steps", "4"])
    # a resumed or starting head keeps its shapes: a flag that says otherwise is refused, not ignored
    causal = str(tmp_path / "causal")
    for extra, match in [(["--resume", "--num-layers", "2"], "--num-layers 2 does not fit .* has --num-layers 1"),
                         (["--resume", "--block-size", "8"], "--block-size 8 does not fit"),
                         (["--resume", "--bidirectional"], "holds a causal head"),
                         (["--init-head", causal, "--block-size", "8"], "is the --init-head and has --block-size 4"),
                         (["--init-head", str(tmp_path / "nowhere")], "has no config.json")]:
        out = causal if "--resume" in extra else str(tmp_path / "other")
        with pytest.raises(SystemExit, match=match):
            train_main(common[:4] + common[8:] + ["--out", out, "--steps", "4"] + extra)
    assert not (tmp_path / "other").exists()

    eval_main(["--head", str(tmp_path / "causal"), "--compare-head", str(tmp_path / "bidir"),
               "--model", str(tiny_model_dir), "--prompts", str(prompts), "--budgets", "1,6",
               "--max-new-tokens", "6", "--num-prompts", "1", "--threads", "1",
               "--heldout-data", str(data), "--val-percent", "40", "--heldout-seqs", "2", "--heldout-anchors", "4"])
    out = capsys.readouterr().out
    assert "causal:causal @6" in out and "bidirectional:bidir @6" in out and "ratio @6" in out
    for label in ("causal:causal", "bidirectional:bidir"):  # per-depth accuracy on the trainer's held-out split
        line = [x for x in out.splitlines() if x.startswith(f"{label} held-out accuracy per depth (2 answers x 4 anchors")]
        assert line and " d1 " in line[-1] and line[-1].endswith("%")
    row = [line for line in out.splitlines() if line.startswith("heldout")][0]
    assert row.split("|")[1].strip() == "1.000"  # budget 1 = plain decoding: exactly 1 token per forward

    # a draft vocabulary from the training answers; eval reads it (and can be told not to)
    from launch.draft_vocab import main as vocab_main
    from sglang_jetspec.core.checkpoint import load_head as load

    vocab_main(["--head", str(tmp_path / "causal"), "--data", str(data), "--model", str(tiny_model_dir),
                "--size", "10", "--val-percent", "40"])
    out = capsys.readouterr().out
    assert "of 49152 tokens" in out and "held-out answers" in out
    vocab = load(str(tmp_path / "causal")).draft_vocab
    assert 10 <= len(vocab) <= 11 and 2 in vocab.token_ids.tolist()  # + SmolLM2's <|im_end|>
    with pytest.raises(SystemExit, match="--force"):
        vocab_main(["--head", str(tmp_path / "causal"), "--data", str(data), "--model", str(tiny_model_dir)])
    for mode in ("on", "off"):
        eval_main(["--head", str(tmp_path / "causal"), "--model", str(tiny_model_dir), "--prompts", str(prompts),
                   "--budgets", "6", "--max-new-tokens", "6", "--num-prompts", "1", "--threads", "1",
                   "--draft-vocab", mode])
        assert "heldout" in capsys.readouterr().out
    # sampled: the decoder's lossless tree sampling; budget 1 still commits exactly one token a forward
    eval_main(["--head", str(tmp_path / "causal"), "--model", str(tiny_model_dir), "--prompts", str(prompts),
               "--budgets", "1,6", "--max-new-tokens", "6", "--num-prompts", "2", "--threads", "1",
               "--temperature", "0.8", "--seed", "3"])
    out = capsys.readouterr().out
    assert "heldout budget 6 (temperature 0.8, rrs): mean accepted length" in out
    assert "sampled at temperature 0.8 (seed 3 + prompt index), sampling rule rrs" in out
    row = [line for line in out.splitlines() if line.startswith("heldout ")][-1]
    assert row.split("|")[1].strip() == "1.000" and float(row.split("|")[2]) >= 1.0
    eval_main(["--head", str(tmp_path / "causal"), "--model", str(tiny_model_dir), "--prompts", str(prompts),
               "--budgets", "1,6", "--max-new-tokens", "6", "--num-prompts", "2", "--threads", "1",
               "--temperature", "0.8", "--seed", "3", "--sampling-rule", "walk"])
    out = capsys.readouterr().out
    assert "heldout budget 6 (temperature 0.8, walk): mean accepted length" in out
    row = [line for line in out.splitlines() if line.startswith("heldout ")][-1]
    assert row.split("|")[1].strip() == "1.000" and float(row.split("|")[2]) >= 1.0
    for bad in ("-0.5", "nan"):
        with pytest.raises(SystemExit, match=f"--temperature {bad} must be a finite number >= 0"):
            eval_main(["--head", str(tmp_path / "causal"), "--model", str(tiny_model_dir), "--prompts", str(prompts),
                       "--temperature", bad])
    from launch.bench_reference import main as wall_main

    wall_main(["--head", str(tmp_path / "causal"), "--model", str(tiny_model_dir), "--prompts", str(prompts),
               "--budgets", "4", "--num-prompts", "2", "--max-new-tokens", "6", "--draft-vocab", "on,off"])
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| heldout |")]
    assert [r.split("|")[2].strip() for r in rows] == ["ar", "reference@4", "reference@4-fullvocab"]
    assert all(r.split("|")[6].strip().startswith("2/2") for r in rows)  # greedy: every output = ar's
    with pytest.raises(SystemExit, match="no draft_vocab.safetensors"):
        wall_main(["--head", str(tmp_path / "bidir"), "--model", str(tiny_model_dir), "--prompts", str(prompts)])
    with pytest.raises(SystemExit, match="no pair_prior.safetensors"):  # asked for, not there
        wall_main(["--head", str(tmp_path / "causal"), "--model", str(tiny_model_dir), "--prompts", str(prompts),
                   "--pair-prior", "on"])
    # with an n-gram prior in the folder: both tree builders side by side, the same outputs
    from sglang_jetspec.core.head_config import HeadConfig
    from sglang_jetspec.core.pair_prior import PairPrior

    vocab = HeadConfig.load(str(tmp_path / "causal")).vocab_size
    PairPrior.from_sequences([[i % vocab for i in range(3 * k, 3 * k + 40)] for k in range(5)], vocab).save(
        str(tmp_path / "causal"))
    wall_main(["--head", str(tmp_path / "causal"), "--model", str(tiny_model_dir), "--prompts", str(prompts),
               "--budgets", "4", "--num-prompts", "2", "--max-new-tokens", "6", "--pair-prior", "on,off"])
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| heldout |")]
    assert [r.split("|")[2].strip() for r in rows] == ["ar", "reference@4", "reference@4-noprior"]
    assert all(r.split("|")[6].strip().startswith("2/2") for r in rows)
    (tmp_path / "causal" / "pair_prior.safetensors").unlink()
    # plain decoding with PyTorch's own CPU linear timed beside the packed oneDNN one
    wall_main(["--head", str(tmp_path / "causal"), "--model", str(tiny_model_dir), "--prompts", str(prompts),
               "--budgets", "4", "--num-prompts", "1", "--max-new-tokens", "6", "--cpu-linear", "onednn,torch"])
    out = capsys.readouterr().out
    assert "CPU linear onednn (and ar[torch] for plain decoding)" in out
    rows = [r for r in out.splitlines() if r.startswith("| heldout |")]
    assert [r.split("|")[2].strip() for r in rows] == ["ar", "ar[torch]", "reference@4"]
    assert all(r.split("|")[6].strip().startswith("1/1") for r in rows)
    with pytest.raises(SystemExit):
        wall_main(["--model", str(tiny_model_dir), "--cpu-linear", "mkl"])
    assert "--cpu-linear 'mkl': expected onednn, torch" in capsys.readouterr().err


def test_continue_a_causal_bidirectional_pair(tiny_model_dir, tiny_data, tmp_path):
    """--init-head + --init-twin: each head of an existing pair continues from its OWN weights in
    lockstep; a start of the wrong mask, a started pair missing one start, or a twin start whose
    config is not the causal head's is refused before the target loads."""
    import shutil

    from launch.train_head import main as train_main

    data, _ = tiny_data
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--anchors-per-seq", "4", "--val-percent", "40",
              "--val-seqs", "2", "--eval-every", "0", "--no-progress", "--threads", "1"]
    shapes = ["--num-layers", "1", "--block-size", "4"]
    causal, bidir = str(tmp_path / "causal"), str(tmp_path / "bidir")
    train_main(common + shapes + ["--out", causal, "--steps", "2", "--seed", "1"])
    train_main(common + shapes + ["--out", bidir, "--steps", "1", "--seed", "2", "--bidirectional"])
    pair = ["--out", str(tmp_path / "c2"), "--also-bidirectional", str(tmp_path / "b2"), "--steps", "1"]
    train_main(common + pair + ["--init-head", causal, "--init-twin", bidir, "--lr", "1e-12"])

    def same(a, b):
        a, b = load_head(a).state_dict(), load_head(b).state_dict()
        return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)

    assert not same(causal, bidir)  # two different starts...
    assert same(causal, str(tmp_path / "c2")) and same(bidir, str(tmp_path / "b2"))  # ...each kept (lr ~0)
    assert load_head(str(tmp_path / "b2")).config.causal_head is False
    other = ["--out", str(tmp_path / "c3"), "--steps", "1"]
    wider = tmp_path / "bidir_block5"  # a bidirectional start whose config is not the causal one's
    shutil.copytree(bidir, wider)
    cfg = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**cfg, "block_size": 5}))
    for extra, match in [(["--also-bidirectional", str(tmp_path / "b3"), "--init-head", causal], "needs both starts"),
                         (["--init-head", bidir], "is the --init-head and holds a bidirectional head"),
                         (["--also-bidirectional", str(tmp_path / "b3"), "--init-head", causal, "--init-twin", str(wider)],
                          "differ in block_size"),
                         (["--init-head", causal, "--init-twin", bidir], "add --also-bidirectional"),
                         (["--also-bidirectional", str(tmp_path / "b3"), "--init-head", causal, "--init-twin", causal],
                          "holds a causal head")]:
        with pytest.raises(SystemExit, match=match):
            train_main(common + other + extra)
    assert not (tmp_path / "c3").exists() and not (tmp_path / "b3").exists()
