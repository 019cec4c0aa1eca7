"""Growing a head by identity-started layers: same drafts before training, trainable after."""

import json

import pytest
import torch

from launch import grow_head as grow_cli
from sglang_jetspec.core.checkpoint import load_head, save_head
from sglang_jetspec.train.head_grow import grow_head, widen_taps
from test_head import make_head, rand_inputs


@pytest.mark.parametrize("causal", [True, False])
@torch.no_grad()
def test_grown_head_drafts_exactly_what_it_grew_from(causal):
    head = make_head(causal=causal, layers=2, bias=True)
    grown = grow_head(head, 4)
    assert grown.config.num_hidden_layers == 4 and len(grown.layers) == 4
    assert head.config.num_hidden_layers == 2 and len(head.layers) == 2  # the source is untouched
    inputs = rand_inputs(head, b=2, t=9)
    want = head(*inputs)
    assert torch.equal(grown(*inputs), want)  # x + 0 is x: bit-exact, not just close
    # the new layers are copies of the last one except for their zeroed residual outputs
    last, new = head.layers[1], grown.layers[3]
    assert torch.equal(new.self_attn.q_proj.weight, last.self_attn.q_proj.weight)
    assert not new.self_attn.o_proj.weight.any() and not new.mlp.down_proj.weight.any()
    assert last.self_attn.o_proj.weight.any()


def test_grown_layers_learn():
    head = make_head(layers=1)
    grown = grow_head(head, 2).train()
    block, bpos, ctx, cpos = rand_inputs(head, t=6)
    loss = grown(block, bpos, ctx.detach(), cpos).pow(2).sum()
    loss.backward()
    # the zeroed outputs get a gradient at once, so the new layer leaves the identity
    assert grown.layers[1].self_attn.o_proj.weight.grad.abs().sum() > 0
    assert grown.layers[1].mlp.down_proj.weight.grad.abs().sum() > 0


def test_grow_needs_more_layers():
    with pytest.raises(ValueError, match="num_layers 2 must exceed the head's 2 layers"):
        grow_head(make_head(layers=2), 2)


def test_cli_round_trip(tmp_path):
    head = make_head(layers=2)
    head.config.extra["layer_types"] = ["full_attention"] * 2
    save_head(head, str(tmp_path / "src"), dtype=torch.bfloat16)
    grow_cli.main(["--head", str(tmp_path / "src"), "--out", str(tmp_path / "big"), "--num-layers", "3"])
    cfg = json.loads((tmp_path / "big" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3 and cfg["layer_types"] == ["full_attention"] * 3
    assert cfg["torch_dtype"] == "bfloat16"
    src, big = load_head(str(tmp_path / "src")), load_head(str(tmp_path / "big"))
    with torch.no_grad():
        inputs = rand_inputs(src, t=7)
        assert torch.equal(big(*inputs), src(*inputs))
    with pytest.raises(SystemExit, match="--num-layers"):
        grow_cli.main(["--head", str(tmp_path / "src"), "--out", str(tmp_path / "x"), "--num-layers", "1"])


def _raw_context(head, taps, t=7, seed=3):
    """Random target features of layers `taps` [1, t, len(taps) * d], one d-wide block per tap."""
    g = torch.Generator().manual_seed(seed)
    d = head.config.target_hidden_size
    per_layer = {i: torch.randn(1, t, d, generator=g) for i in range(head.config.num_target_layers)}
    return torch.cat([per_layer[i] for i in taps], dim=-1)


@pytest.mark.parametrize("taps", [[1, 3, 5, 9], [9, 0, 5, 1], [1, 5, 9, 11]])
@torch.no_grad()
def test_widened_head_projects_the_old_taps_exactly(taps):
    head = make_head(layers=2)  # taps [1, 5, 9]
    wide = widen_taps(head, taps)
    assert wide.config.target_layer_ids == taps and head.config.target_layer_ids == [1, 5, 9]
    assert wide.fc.weight.shape == (32, 24 * len(taps))
    old_ctx = head.project_context(_raw_context(head, [1, 5, 9]))
    new_ctx = wide.project_context(_raw_context(head, taps))  # the new taps hold other, non-zero values
    # the same products and zeros, summed in another order by the matrix product: equal to rounding
    assert torch.allclose(new_ctx, old_ctx, rtol=0, atol=1e-5)
    block, bpos, _, cpos = rand_inputs(head, t=7)
    assert torch.allclose(wide(block, bpos, new_ctx, cpos), head(block, bpos, old_ctx, cpos), rtol=0, atol=1e-4)


def test_widened_taps_learn():
    head = make_head(layers=1)
    wide = widen_taps(head, [1, 2, 5, 9]).train()
    ctx = wide.project_context(_raw_context(head, [1, 2, 5, 9]))
    block, bpos, _, cpos = rand_inputs(head, t=7)
    wide(block, bpos, ctx, cpos).pow(2).sum().backward()
    assert wide.fc.weight.grad[:, 24:48].abs().sum() > 0  # the new tap's zero block gets a gradient


@pytest.mark.parametrize("taps, message", [
    ([1, 5], "must hold every current tap"),
    ([1, 5, 9], "at least one more"),
    ([1, 5, 9, 5], "repeats a layer"),
    ([1, 5, 9, 12], r"outside the target's layers 0..11"),
])
def test_widen_rejects_bad_tap_lists(taps, message):
    with pytest.raises(ValueError, match=message):
        widen_taps(make_head(), taps)


def test_cli_widens_taps(tmp_path):
    save_head(make_head(layers=2), str(tmp_path / "src"), dtype=torch.float32)
    grow_cli.main(["--head", str(tmp_path / "src"), "--out", str(tmp_path / "wide"), "--target-layer-ids", "1,3,5,9",
                   "--num-layers", "3"])
    cfg = json.loads((tmp_path / "wide" / "config.json").read_text())
    assert cfg["dflash_config"]["target_layer_ids"] == [1, 3, 5, 9] and cfg["num_hidden_layers"] == 3
    src, wide = load_head(str(tmp_path / "src")), load_head(str(tmp_path / "wide"))
    with torch.no_grad():
        block, bpos, _, cpos = rand_inputs(src, t=7)
        assert torch.allclose(wide(block, bpos, wide.project_context(_raw_context(src, [1, 3, 5, 9])), cpos),
                              src(block, bpos, src.project_context(_raw_context(src, [1, 5, 9])), cpos),
                              rtol=0, atol=1e-4)
    with pytest.raises(SystemExit, match="nothing to grow"):
        grow_cli.main(["--head", str(tmp_path / "src"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="expected comma-separated"):
        grow_cli.main(["--head", str(tmp_path / "src"), "--out", str(tmp_path / "x"), "--target-layer-ids", "1;3"])
    with pytest.raises(SystemExit, match="--target-layer-ids: .*must hold every current tap"):
        grow_cli.main(["--head", str(tmp_path / "src"), "--out", str(tmp_path / "x"), "--target-layer-ids", "1,3"])
