"""Growing a head by identity-started layers: same drafts before training, trainable after."""

import json

import pytest
import torch

from launch import grow_head as grow_cli
from sglang_jetspec.core.checkpoint import load_head, save_head
from sglang_jetspec.train.head_grow import grow_head
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
