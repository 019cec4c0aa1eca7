"""The shipped JetSpec heads for the MoE targets: models/qwen3moe-e64-jetspec for the embedded
default (qwen3moe, 64 experts) and models/qwen3moe-tiny-jetspec for qwen3moe-tiny (8 experts).

Fast: the launchers find each (`python -m launch.models head qwen3moe`, and as the default head
of its target), it loads strictly in the published layout, fits the target (hidden size,
depth, vocabulary, MASK token, taps SGLang can capture), and drafts usefully and losslessly on a
held-out prompt through the reference decoder. Each head's bidirectional
twin (its folder + `-bidir`, the baseline of `launch.bench --methods bidirectional`) loads
strictly, is marked bidirectional, differs from the causal head in nothing else and drafts
losslessly too.
"""

import json

import pytest
import torch

from head_checks import assert_bidirectional_twin, assert_drafts_losslessly
from sglang_jetspec.model_store import default_head_dir, model_path, shipped_head_dir


HEADS = {"qwen3moe": "qwen3moe-e64-jetspec", "qwen3moe-tiny": "qwen3moe-tiny-jetspec"}


@pytest.fixture(scope="module", params=sorted(HEADS))
def moe_name(request):
    return request.param


@pytest.fixture(scope="module")
def moe_dir(moe_name):
    return model_path(moe_name)


@pytest.fixture(scope="module")
def head_dir(moe_name):
    return shipped_head_dir(moe_name)


@pytest.fixture(scope="module")
def bidir_dir(head_dir):
    return head_dir.parent / (head_dir.name + "-bidir")


def test_launchers_find_the_head(moe_name, moe_dir, head_dir, capsys):
    from launch.models import main

    assert head_dir.name == HEADS[moe_name] and head_dir.parent == moe_dir.parent
    main(["head", moe_name])
    assert capsys.readouterr().out.strip() == str(head_dir)
    assert default_head_dir(moe_dir) == head_dir  # launch.generate/eval use it without --head
    assert default_head_dir(moe_dir.parent) is None  # any other folder: no default head


def test_head_loads_and_fits_the_moe_target(moe_dir, head_dir):
    from transformers import AutoTokenizer

    from sglang_jetspec.core.checkpoint import load_head
    from sglang_jetspec.integration.server_args import TargetDims, check_head
    from sglang_jetspec.reference.runner import default_mask_token_id

    target = json.loads((moe_dir / "config.json").read_text())
    head = load_head(str(head_dir))  # strict: a missing, extra or misshapen tensor fails here
    cfg = head.config
    assert cfg.target_hidden_size == cfg.hidden_size == target["hidden_size"] == 192
    assert cfg.vocab_size == target["vocab_size"] and cfg.num_target_layers == target["num_hidden_layers"]
    assert cfg.causal_head and cfg.block_size == 16 and cfg.num_hidden_layers == 2
    assert cfg.mask_token_id == default_mask_token_id(AutoTokenizer.from_pretrained(moe_dir))
    assert check_head(cfg, TargetDims(target["hidden_size"], target["num_hidden_layers"], target["vocab_size"])) == []
    assert {p.dtype for p in load_head(str(head_dir), dtype=None).parameters()} <= {torch.bfloat16, torch.float32}


@pytest.mark.parametrize("kind", ["causal", "bidirectional"])
def test_head_drafts_losslessly_on_a_heldout_prompt(moe_dir, head_dir, bidir_dir, kind):
    from sglang_jetspec.reference.target import HFTarget

    folder = head_dir if kind == "causal" else bidir_dir
    assert_drafts_losslessly(HFTarget(moe_dir), folder, causal=kind == "causal", max_new_tokens=32)


def test_bidirectional_twin_loads_and_fits_the_moe_target(moe_dir, head_dir, bidir_dir):
    assert_bidirectional_twin(bidir_dir, head_dir, moe_dir)
