"""HookRegistry patch 1: JETSPEC's per-step KV reserve is the node budget."""

from types import SimpleNamespace

import pytest

from sglang_jetspec.integration.hooks import ALLOC_LEN_TARGET, jetspec_alloc_len, register_hooks


def test_budget_is_the_reserve_only_for_jetspec():
    assert jetspec_alloc_len("JETSPEC", 32) == 32
    assert jetspec_alloc_len("jetspec", 8) == 8
    assert jetspec_alloc_len("EAGLE", 32) is None
    assert jetspec_alloc_len(None, None) is None
    with pytest.raises(ValueError, match="num_draft_tokens >= 1, got None"):
        jetspec_alloc_len("JETSPEC", None)


def test_hook_wraps_sglangs_sizing_and_falls_through_for_others(monkeypatch):
    from sglang.srt import runtime_context
    from sglang.srt.mem_cache import allocation_sizing
    from sglang.srt.plugins.hook_registry import HookRegistry

    # restore SGLang's function and the registry after the test
    monkeypatch.setattr(allocation_sizing, "get_alloc_len_per_decode",
                        allocation_sizing.get_alloc_len_per_decode)
    monkeypatch.setattr(HookRegistry, "_hooks", type(HookRegistry._hooks)(list, HookRegistry._hooks))
    monkeypatch.setattr(HookRegistry, "_patched", set(HookRegistry._patched) - {ALLOC_LEN_TARGET})
    import sglang_jetspec.integration.hooks as hooks_module

    monkeypatch.setattr(hooks_module, "_registered", False)  # register into this test's registry
    register_hooks()
    HookRegistry.apply_hooks()
    assert ALLOC_LEN_TARGET in HookRegistry._patched

    def spec(algo):
        return SimpleNamespace(speculative_algorithm=algo, speculative_num_steps=15,
                               speculative_eagle_topk=7, speculative_num_draft_tokens=8,
                               max_speculative_num_draft_tokens=None)

    for module in (runtime_context, allocation_sizing):
        monkeypatch.setattr(module, "get_spec", lambda: spec("JETSPEC"))
    monkeypatch.setattr(runtime_context, "max_speculative_num_draft_tokens", lambda: 8)
    assert allocation_sizing.get_alloc_len_per_decode() == 8
    assert allocation_sizing.get_alloc_reserve_per_decode() == 16  # SGLang's double buffer on top
    from sglang_jetspec.integration import kv_reserve

    try:  # the worker's published width narrows the reserve, never widens it past the budget
        kv_reserve.set_width(3)
        assert allocation_sizing.get_alloc_reserve_per_decode() == 6
        kv_reserve.set_width(50)
        assert allocation_sizing.get_alloc_len_per_decode() == 8
    finally:
        kv_reserve.set_width(None)
    assert allocation_sizing.get_alloc_len_per_decode() == 8

    for module in (runtime_context, allocation_sizing):
        monkeypatch.setattr(module, "get_spec", lambda: spec(None))
    assert allocation_sizing.get_alloc_len_per_decode() == 1  # no speculation: SGLang's answer


def test_prompts_the_scheduler_would_die_on_are_refused_on_jetspec_servers_only():
    from sglang_jetspec.integration.hooks import prompt_problem

    assert "prompt is empty" in prompt_problem("JETSPEC", [], False, 100)
    assert prompt_problem("JETSPEC", [1, 99], False, 100) is None
    assert "token id 100 outside the vocabulary [0, 100)" in prompt_problem("JETSPEC", [1, 100], False, 100)
    assert "token id -1" in prompt_problem("jetspec", [-1], False, 100)
    assert prompt_problem("JETSPEC", [], True, 100) is None  # embeddings/images carry the input
    assert prompt_problem("EAGLE", [], False, 100) is None
    assert prompt_problem(None, [10 ** 6], False, 100) is None


def test_row_headroom_holds_the_decode_reserve_on_jetspec_only():
    from sglang_jetspec.integration.hooks import row_headroom

    assert row_headroom(4 + 64, "JETSPEC", 2 * 64, 1) == 128  # the double buffer fits the row
    assert row_headroom(500, "JETSPEC", 128, 1) == 500  # never shrinks
    assert row_headroom(68, "EAGLE", 128, 1) == 68
    assert row_headroom(68, None, 128, 1) == 68
