"""Head checkpoints in the published layout: exact round trips and loud failures."""

import copy
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from sglang_jetspec.core.checkpoint import expected_shapes, load_head, save_head, stored_dtype
from sglang_jetspec.core.head import DraftHead
from sglang_jetspec.core.head_config import HeadConfig

# The published Qwen3-8B head's config.json, scaled down (5 -> 2 layers, 4096 -> 64 hidden,
# 32/8 -> 4/2 heads of 16, MLP 192); same target (36 layers, taps 1..33, mask 151669).
SMALL_8B = {
    "architectures": ["DFlashDraftModel"],
    "model_type": "qwen3",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "block_size": 16,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "dflash_config": {"causal_head": True, "mask_token_id": 151669,
                      "target_layer_ids": [1, 9, 17, 25, 33], "some_future_flag": "kept"},
    "head_dim": 16,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 192,
    "layer_types": ["full_attention", "full_attention"],
    "max_position_embeddings": 40960,
    "max_window_layers": 2,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "num_target_layers": 36,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "4.57.1",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
    "an_unknown_field": {"nested": [1, 2, 3]},
}

PUBLISHED_KEYS = sorted(
    [f"layers.{i}.{name}.weight" for i in range(2) for name in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "self_attn.q_norm", "self_attn.k_norm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
        "input_layernorm", "post_attention_layernorm")]
    + ["fc.weight", "hidden_norm.weight", "norm.weight"])


def random_head(config_dict=SMALL_8B, seed=0):
    torch.manual_seed(seed)
    head = DraftHead(HeadConfig.from_dict(config_dict))
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return head.eval()


def run(head):
    g = torch.Generator().manual_seed(5)
    c = head.config
    ctx = head.project_context(torch.randn(1, 12, c.num_target_features, generator=g))
    block = torch.randn(1, c.block_size, c.hidden_size, generator=g)
    return head(block, (12 + torch.arange(c.block_size))[None], ctx, torch.arange(12)[None])


@pytest.fixture
def saved(tmp_path):
    head = random_head()
    save_head(head, str(tmp_path))
    return head, str(tmp_path)


def test_key_set_is_the_published_layout(saved):
    head, folder = saved
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    assert sorted(tensors) == PUBLISHED_KEYS
    d, hd = 64, 16
    assert tensors["fc.weight"].shape == (d, 5 * d)
    assert tensors["layers.0.self_attn.q_proj.weight"].shape == (4 * hd, d)
    assert tensors["layers.1.self_attn.k_proj.weight"].shape == (2 * hd, d)
    assert tensors["layers.1.self_attn.o_proj.weight"].shape == (d, 4 * hd)
    assert tensors["layers.0.self_attn.q_norm.weight"].shape == (hd,)
    assert tensors["layers.0.mlp.down_proj.weight"].shape == (d, 192)


def test_round_trip_is_bit_exact(saved):
    head, folder = saved
    with open(os.path.join(folder, "config.json")) as f:
        assert json.load(f) == SMALL_8B  # unknown fields (top level and dflash_config) preserved
    loaded = load_head(folder)
    assert loaded.config == head.config
    a, b = head.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(run(loaded), run(head))


def test_bf16_save_sets_dtype(tmp_path):
    head = random_head()
    save_head(head, str(tmp_path), dtype=torch.bfloat16)
    assert HeadConfig.load(str(tmp_path)).extra["torch_dtype"] == "bfloat16"
    assert head.config.extra["torch_dtype"] == "float32"  # the live head's config is untouched
    loaded = load_head(str(tmp_path), dtype=torch.bfloat16)
    assert loaded.fc.weight.dtype == torch.bfloat16
    assert torch.equal(loaded.fc.weight, head.fc.weight.to(torch.bfloat16))
    assert stored_dtype(HeadConfig.load(str(tmp_path))) == torch.bfloat16  # what save_head wrote


def test_stored_dtype_reads_either_key():
    cfg = random_head().config
    cfg.extra.pop("torch_dtype", None)
    assert stored_dtype(cfg) == torch.float32  # nothing named: fp32
    cfg.extra["dtype"] = "float16"
    assert stored_dtype(cfg) == torch.float16


def test_sharded_checkpoint_loads(saved, tmp_path):
    head, folder = saved
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    keys = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": keys[:10], "model-00002-of-00002.safetensors": keys[10:]}
    for name, ks in parts.items():
        save_file({k: tensors[k] for k in ks}, str(shard_dir / name))
    index = {"metadata": {}, "weight_map": {k: n for n, ks in parts.items() for k in ks}}
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    (shard_dir / "config.json").write_text(json.dumps(SMALL_8B))
    loaded = load_head(str(shard_dir))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in tensors.items())
    os.remove(shard_dir / "model-00002-of-00002.safetensors")
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        load_head(str(shard_dir))


def _rewrite(folder, fn):
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)


def test_renamed_key_fails(saved):
    _, folder = saved
    _rewrite(folder, lambda t: t.__setitem__("fc.weights", t.pop("fc.weight")))
    with pytest.raises(ValueError, match=r"unexpected keys \['fc.weights'\]; missing \['fc.weight'\]"):
        load_head(folder)


def test_missing_key_fails(saved):
    _, folder = saved
    _rewrite(folder, lambda t: t.pop("layers.1.self_attn.k_norm.weight"))
    with pytest.raises(ValueError, match=r"missing \['layers.1.self_attn.k_norm.weight'\]"):
        load_head(folder)


def test_extra_key_fails(saved):
    _, folder = saved
    _rewrite(folder, lambda t: t.__setitem__("embed_tokens.weight", torch.zeros(3, 64)))
    with pytest.raises(ValueError, match=r"unexpected keys \['embed_tokens.weight'\]"):
        load_head(folder)


def test_wrong_shape_fails(saved):
    _, folder = saved
    _rewrite(folder, lambda t: t.__setitem__("fc.weight", torch.zeros(64, 4 * 64)))
    with pytest.raises(ValueError, match=r"fc.weight has \[64, 256\], expected \[64, 320\]"):
        load_head(folder)


def test_missing_files_fail(saved):
    _, folder = saved
    os.remove(os.path.join(folder, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors"):
        load_head(folder)
    os.remove(os.path.join(folder, "config.json"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_head(folder)


def test_missing_config_field_fails():
    d = copy.deepcopy(SMALL_8B)
    del d["num_key_value_heads"]
    with pytest.raises(ValueError, match="missing required field.*num_key_value_heads"):
        HeadConfig.from_dict(d)
    d = copy.deepcopy(SMALL_8B)
    del d["rope_theta"]
    with pytest.raises(ValueError, match="rope_theta"):
        HeadConfig.from_dict(d)


def test_rope_parameters_form_round_trips():
    """Newer transformers nest rope_theta in rope_parameters; it must stay there."""
    d = copy.deepcopy(SMALL_8B)
    del d["rope_theta"], d["rope_scaling"]
    d["rope_parameters"] = {"rope_type": "default", "rope_theta": 5e5}
    cfg = HeadConfig.from_dict(d)
    assert cfg.rope_theta == 5e5 and cfg.to_dict() == d
    d["rope_parameters"]["rope_type"] = "yarn"
    with pytest.raises(ValueError, match="rope_type 'yarn'"):
        HeadConfig.from_dict(d)


def test_default_target_layer_ids_when_absent():
    d = copy.deepcopy(SMALL_8B)
    del d["dflash_config"]["target_layer_ids"]
    assert HeadConfig.from_dict(d).target_layer_ids == [1, 33]  # 2 head layers: ends 1 and L-3
    d["num_hidden_layers"], d["layer_types"] = 1, ["full_attention"]
    assert HeadConfig.from_dict(d).target_layer_ids == [18]


@pytest.mark.parametrize("change,message", [
    ({"dflash_config": {"target_layer_ids": [1, 36]}}, r"target layer id\(s\) \[36\] out of range"),
    ({"num_key_value_heads": 3}, "num_attention_heads 4 must be a multiple of num_key_value_heads 3"),
    ({"block_size": 1}, "block_size 1 must be >= 2"),
    ({"dflash_config": {"mask_token_id": 151936}}, "mask_token_id 151936 out of range"),
    ({"layer_types": ["full_attention"]}, "layer_types has 1 entries"),
    ({"hidden_size": 0}, "hidden_size 0 must be an integer >= 1"),
])
def test_validate_names_the_problem(change, message):
    d = copy.deepcopy(SMALL_8B)
    for k, v in change.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    with pytest.raises(ValueError, match=message):
        HeadConfig.from_dict(d)


def test_check_target():
    cfg = HeadConfig.from_dict(SMALL_8B)
    cfg.check_target(64, 36, 151936)  # fits
    with pytest.raises(ValueError, match="target_hidden_size 64 does not match target hidden_size 2048"):
        cfg.check_target(2048, 36, 151936)
    with pytest.raises(ValueError, match="num_target_layers 36 does not match target num_hidden_layers 28"):
        cfg.check_target(64, 28, 151936)
    with pytest.raises(ValueError, match="vocab_size 151936 does not match target vocab_size 1000"):
        cfg.check_target(64, 36, 1000)


def _n_params(cfg):
    return sum(torch.Size(s).numel() for s in expected_shapes(cfg).values())


def test_for_target_reproduces_published_sizes():
    c8 = HeadConfig.for_target(4096, 36, 151936, num_layers=5, mask_token_id=151669)
    assert (c8.num_attention_heads, c8.num_key_value_heads, c8.head_dim, c8.intermediate_size) == (32, 8, 128, 12288)
    assert c8.target_layer_ids == [1, 9, 17, 25, 33] and c8.causal_head
    assert abs(_n_params(c8) / 1e9 - 1.05) < 0.01  # "about 1.05B params"
    c30 = HeadConfig.for_target(2048, 48, 151936, num_layers=8, num_attention_heads=32,
                                num_key_value_heads=4, head_dim=128, num_target_ids=5)
    assert c30.target_layer_ids == [1, 12, 23, 34, 45] and c30.intermediate_size == 6144
    assert abs(_n_params(c30) / 1e6 - 474) < 5  # "about 474M params"
    assert HeadConfig.from_dict(c30.to_dict()) == c30
