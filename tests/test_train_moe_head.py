"""Head training against a sparse MoE target (Qwen3-MoE layout, like models/qwen3moe-tiny): the
head's dense MLP starts as an average of the copied layer's experts (an MoE layer has no
gate_proj/up_proj/down_proj of its own), and the train_head command line runs end to end on a
target with ONE kv head, untied lm_head and SmolLM2's tokenizer (the recency init, which needs
two kv groups, is then left off by default instead of stopping the run)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from sglang_jetspec.core.checkpoint import load_head
from sglang_jetspec.train.head_init import build_head


REPO = Path(__file__).resolve().parent.parent
MASK = 3


def tiny_moe(vocab=61, intermediate=32, seed=0):
    torch.manual_seed(seed)
    cfg = Qwen3MoeConfig(vocab_size=vocab, hidden_size=32, intermediate_size=intermediate, moe_intermediate_size=16,
                         num_experts=4, num_experts_per_tok=2, norm_topk_prob=True, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=1, head_dim=8, tie_word_embeddings=False,
                         max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2)
    model = Qwen3MoeForCausalLM(cfg).float().eval()
    with torch.no_grad():  # transformers leaves the fused expert tensors uninitialised
        for layer in model.model.layers:
            layer.mlp.experts.gate_up_proj.normal_(0.0, 0.1)
            layer.mlp.experts.down_proj.normal_(0.0, 0.1)
    return model


def _expert_out(experts, e, x):
    gate, up = torch.nn.functional.linear(x, experts.gate_up_proj[e]).chunk(2, dim=-1)
    return torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, experts.down_proj[e])


@pytest.mark.parametrize("intermediate", [32, 40])  # 2 experts exactly; 2 experts + 8 spare channels
@torch.no_grad()
def test_head_mlp_starts_as_the_mean_of_the_moe_layers_experts(intermediate):
    model = tiny_moe(intermediate=intermediate)
    head = build_head(model, num_layers=2, block_size=5, mask_token_id=MASK, init_from_target=True)
    x = torch.randn(7, 32)
    for j, i in enumerate((2, 3)):  # the target's last two layers
        tl, hl = model.model.layers[i], head.layers[j]
        assert torch.equal(hl.self_attn.q_proj.weight, tl.self_attn.q_proj.weight)
        assert torch.equal(hl.self_attn.k_norm.weight, tl.self_attn.k_norm.weight)
        assert torch.equal(hl.post_attention_layernorm.weight, tl.post_attention_layernorm.weight)
        want = (_expert_out(tl.mlp.experts, 0, x) + _expert_out(tl.mlp.experts, 1, x)) / 2
        assert torch.allclose(hl.mlp(x), want, atol=1e-6)
        if intermediate > 32:  # spare channels: no output yet, but trainable (non-zero gate/up)
            assert hl.mlp.down_proj.weight[:, 32:].abs().max() == 0
            assert hl.mlp.gate_proj.weight[32:].abs().max() > 0 and hl.mlp.up_proj.weight[32:].abs().max() > 0
    assert head.config.num_key_value_heads == 1 and head.config.intermediate_size == intermediate


def test_moe_head_wider_than_no_expert_is_refused():
    from sglang_jetspec.train.head_init import dense_mlp_weights

    with pytest.raises(ValueError, match="experts of width 16"):
        dense_mlp_weights(tiny_moe().model.layers[0].mlp, 8)


@pytest.fixture(scope="module")
def moe_model_dir(tmp_path_factory):
    """A tiny random Qwen3-MoE target with the shipped MoE target's tokenizer (SmolLM2's: real chat
    template and MASK token)."""
    folder = tmp_path_factory.mktemp("tiny_moe")
    for f in (REPO / "models" / "qwen3moe-tiny").iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "generation_config")):
            shutil.copy(f, folder / f.name)
    tiny_moe(vocab=49152).save_pretrained(folder)
    return folder


def test_train_export_and_eval_command_lines_on_a_moe_target(moe_model_dir, tmp_path, capsys):
    from launch.eval_head import main as eval_main
    from launch.export_head import main as export_main
    from launch.train_head import main as train_main
    from test_train import write_random_regen

    data = tmp_path / "regen"
    write_random_regen(data)
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text('{"prompt": "What is 2 + 2?"}\n')
    train_main(["--model", str(moe_model_dir), "--data", str(data), "--out", str(tmp_path / "run"),
                "--num-layers", "2", "--block-size", "4", "--anchors-per-seq", "4", "--steps", "2",
                "--val-percent", "40", "--val-seqs", "2", "--val-anchors", "4", "--eval-every", "2",
                "--eval-prompts", str(prompts), "--eval-num-prompts", "1", "--eval-max-new-tokens", "6",
                "--eval-budget", "6", "--no-progress", "--threads", "1", "--mlp-size", "48"])
    assert "no recency init" in capsys.readouterr().out
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert {"acc1", "2gram_acc", "tau_heldout@6"} <= set([r for r in log if "eval" in r][-1]["eval"])

    export_main(["--head", str(tmp_path / "run"), "--out", str(tmp_path / "export")])
    head = load_head(str(tmp_path / "export"))
    head.config.check_target(32, 4, 49152)
    assert head.config.intermediate_size == 48  # --mlp-size, not the target's unused dense width 32
    assert max(head.config.target_layer_ids) <= 4 - 2  # SGLang can capture them (server_args.check_head)
    eval_main(["--head", str(tmp_path / "export"), "--model", str(moe_model_dir), "--prompts", str(prompts),
               "--budgets", "1,6", "--max-new-tokens", "6", "--threads", "1"])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("heldout")][0]
    assert row.split("|")[1].strip() == "1.000"


@pytest.mark.parametrize("extra,match", [(["--mlp-size", "0"], "--mlp-size 0"),
                                         (["--mlp-size", "64", "--init-head", "x"], "--init-head keeps")])
def test_bad_mlp_size_is_refused_before_loading_anything(tmp_path, extra, match):
    from launch.train_head import main as train_main

    with pytest.raises(SystemExit, match=match):
        train_main(["--data", str(tmp_path), "--out", str(tmp_path / "run")] + extra)
