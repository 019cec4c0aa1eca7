"""The SmolLM2 head's bidirectional twin, models/smollm2-135m-jetspec-bidir (the baseline of
`launch.bench --methods bidirectional` on the dense default).

Fast: it loads strictly in the published layout, is marked bidirectional, fits SmolLM2, equals
the shipped causal head's config in every other field, is never picked as the default head, and
drafts usefully and losslessly on a held-out prompt through the reference decoder.
"""

import json

import torch
import pytest

from sglang_jetspec.model_store import default_head_dir, shipped_head_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def causal_dir():
    return shipped_head_dir("smollm2")


@pytest.fixture(scope="module")
def twin_dir(causal_dir):
    return causal_dir.parent / "smollm2-135m-jetspec-bidir"


def test_twin_is_the_causal_heads_config_but_for_the_mask(smollm2_dir, causal_dir, twin_dir):
    from sglang_jetspec.core.checkpoint import load_head
    from sglang_jetspec.integration.server_args import TargetDims, check_head

    target = json.loads((smollm2_dir / "config.json").read_text())
    assert json.loads((twin_dir / "config.json").read_text())["dflash_config"]["causal_head"] is False
    twin = load_head(str(twin_dir))  # strict: every weight present, no stray ones
    assert not twin.config.causal_head
    assert check_head(twin.config, TargetDims(target["hidden_size"], target["num_hidden_layers"],
                                              target["vocab_size"])) == []
    twin_cfg = twin.config.to_dict()
    twin_cfg["dflash_config"]["causal_head"] = True
    assert twin_cfg == load_head(str(causal_dir)).config.to_dict()
    assert default_head_dir(smollm2_dir) == causal_dir  # the twin is never the default head


@torch.no_grad()
def test_twin_drafts_losslessly_on_a_heldout_prompt(smollm2_target, twin_dir):
    from sglang_jetspec.core.checkpoint import load_head
    from sglang_jetspec.reference.ar import generate_ar
    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
    from sglang_jetspec.reference.prompts import encode_prompts, read_prompts

    target = smollm2_target
    head = load_head(str(twin_dir), device=str(target.device), dtype=target.dtype)
    prompt = read_prompts(twin_dir.parent.parent / "data" / "prompts" / "math.heldout.jsonl")[0]
    ids = encode_prompts(target.tokenizer, [prompt])[0]
    ar = generate_ar(target, ids, 24)
    res = ReferenceDecoder(target, head, TreeSettings(budget=16, width=7)).generate(ids, 24)
    assert res.output_ids == ar.output_ids
    assert sum(res.accepted) / res.rounds > 1.5, res.accepted  # a trained head, not a random one
