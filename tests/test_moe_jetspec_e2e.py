"""JETSPEC on the embedded MoE target through the real SGLang server (slow).

The shipped Qwen3-MoE tiny target with its shipped head, static budget 16, expert-aware
scheduling on (the default on MoE targets): greedy tokens equal transformers' fp32 greedy (a
difference is tolerated only at a reported fp32 near-tie), while the worker really pruned trees
with predicted experts and counted the experts every verify activated (/get_server_info).
"""

import json
import time
import urllib.request

import pytest
import torch

from sglang_jetspec.model_store import model_path, shipped_head_dir

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

NEW_TOKENS = 40


def test_expert_aware_jetspec_on_the_moe_target_is_lossless_and_reports_its_experts(tmp_path):
    from server_harness import STARTUP_TIMEOUT_S, Server, run_all
    from test_moe_target import _prompts, greedy_mismatches
    from transformers import AutoModelForCausalLM, AutoTokenizer

    moe_dir, head = model_path("qwen3moe"), shipped_head_dir("qwen3moe")
    model = AutoModelForCausalLM.from_pretrained(moe_dir, dtype=torch.float32).eval()
    prompts = _prompts(AutoTokenizer.from_pretrained(moe_dir))
    server = Server(moe_dir, tmp_path / "jetspec.log", "--max-total-tokens", "4096",
                    "--speculative-algorithm", "JETSPEC", "--speculative-draft-model-path", str(head),
                    "--speculative-num-draft-tokens", "16")
    try:
        server.wait_ready(time.time() + STARTUP_TIMEOUT_S)
        got = run_all(server.generate, [(ids, NEW_TOKENS) for ids in prompts])
        info = json.loads(urllib.request.urlopen(server.url("/get_server_info"), timeout=30).read())
        state = info["internal_states"][0]["jetspec"]
    finally:
        server.kill()

    problems = greedy_mismatches(model, prompts, got, NEW_TOKENS)
    assert not problems, problems

    rounds = sum(int(g["meta_info"].get("spec_verify_ct", 0)) for g in got)
    tokens = sum(len(g["output_ids"]) - 1 for g in got)
    assert rounds < tokens  # the trained head's drafts were accepted: fewer rounds than tokens

    ex = state["experts"]
    print({k: v for k, v in ex.items() if k != "cost"})
    assert ex["prune"] is True and ex["rounds"] == state["rounds"] > 0
    assert 0 < ex["kept_nodes"] <= ex["candidate_nodes"]
    layers = len(ex["distinct_per_layer_sum"])
    assert layers == 6 and len(ex["recall_per_layer"]) == layers
    assert 2 <= ex["mean_distinct_per_verify"] <= 8  # top-2 of 8 experts: between 2 and 8 per layer
    assert all(0.0 <= r <= 1.0 for r in ex["recall_per_layer"] + ex["precision_per_layer"])
    # a learned token -> experts table beats chance (top-2 of 8 at random: 0.25)
    assert sum(ex["recall_per_layer"]) / layers > 0.3
