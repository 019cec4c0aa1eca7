"""Checks shared by the tests of shipped heads (dense and MoE): a bidirectional twin equals its
causal head but for the in-block mask, and a head drafts losslessly and usefully over its draft
vocabulary."""

import json
from pathlib import Path

import torch


def assert_bidirectional_twin(twin_dir: Path, causal_dir: Path, target_dir: Path) -> None:
    """twin_dir loads strictly, is marked bidirectional, fits the target and equals causal_dir's
    config in every other field; it is never the target's default head."""
    from sglang_jetspec.core.checkpoint import load_head
    from sglang_jetspec.integration.server_args import TargetDims, check_head
    from sglang_jetspec.model_store import default_head_dir

    target = json.loads((target_dir / "config.json").read_text())
    assert json.loads((twin_dir / "config.json").read_text())["dflash_config"]["causal_head"] is False
    cfg = load_head(str(twin_dir)).config  # strict: every weight present, no stray ones
    assert not cfg.causal_head
    assert check_head(cfg, TargetDims(target["hidden_size"], target["num_hidden_layers"], target["vocab_size"])) == []
    twin = cfg.to_dict()
    twin["dflash_config"]["causal_head"] = True
    assert twin == load_head(str(causal_dir)).config.to_dict()  # identical but for the in-block mask
    assert default_head_dir(target_dir) == causal_dir  # the twin is never picked as the default head
    # both draft over the same tokens, so a comparison of the two measures the mask alone
    assert torch.equal(load_head(str(twin_dir)).draft_vocab.token_ids, load_head(str(causal_dir)).draft_vocab.token_ids)


@torch.no_grad()
def assert_drafts_losslessly(target, head_dir: Path, causal: bool, max_new_tokens: int) -> None:
    """The head reproduces plain greedy decoding on the first held-out math prompt through the
    reference decoder (budget 16) and commits more than 1.5 tokens per round (a trained head)."""
    from sglang_jetspec.core.checkpoint import load_head
    from sglang_jetspec.reference.ar import generate_ar
    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
    from sglang_jetspec.reference.prompts import encode_prompts, read_prompts

    head = load_head(str(head_dir), device=str(target.device), dtype=target.dtype)
    assert head.config.causal_head == causal
    # shipped heads carry a draft vocabulary that fits the target (the decoder below drafts over it)
    assert head.draft_vocab is not None and head.draft_vocab.check(target.vocab_size, 7) == []
    prompt = read_prompts(Path(__file__).resolve().parent.parent / "data" / "prompts" / "math.heldout.jsonl")[0]
    ids = encode_prompts(target.tokenizer, [prompt])[0]
    ar = generate_ar(target, ids, max_new_tokens)
    res = ReferenceDecoder(target, head, TreeSettings(budget=16, width=7)).generate(ids, max_new_tokens)
    assert res.output_ids == ar.output_ids
    assert sum(res.accepted) / res.rounds > 1.5, res.accepted
