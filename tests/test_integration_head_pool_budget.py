"""HookRegistry patch 6: the head's context pool is budgeted in SGLang's KV pool sizing."""

from types import SimpleNamespace

import pytest
import torch

from sglang_jetspec.integration.head_pool import HeadContextPool
from sglang_jetspec.integration.hooks import POOL_TARGET, budget_head_pool, register_hooks
from sglang_jetspec.model_store import shipped_head_dir

HEAD = str(shipped_head_dir("qwen3moe-tiny"))


def _sglang_configurator(cell: int):
    """SGLang's standard pool configurator with a given per-token cell size (its real sizing
    arithmetic; the fields are the ones its __init__ sets from a model)."""
    from sglang.srt.model_executor.pool_configurator import DefaultPoolConfigurator

    conf = DefaultPoolConfigurator.__new__(DefaultPoolConfigurator)
    conf._cell_size, conf._fixed_overhead_bytes, conf._zero_kv_max_tokens = cell, 0, 1 << 40
    conf.kv_cache_dtype_str = "auto"
    return conf


def test_bytes_per_slot_are_k_and_v_of_every_head_layer():
    assert HeadContextPool.bytes_per_slot(2, 4, 128, torch.bfloat16) == 2 * 2 * 4 * 128 * 2
    with pytest.raises(ValueError, match="num_kv_heads 0 must be an int >= 1"):
        HeadContextPool.bytes_per_slot(2, 0, 128, torch.bfloat16)
    # the pool the worker allocates holds exactly that per slot
    pool = HeadContextPool(2, 10, 4, 128, "cpu", torch.bfloat16)
    assert pool.nbytes() == 10 * HeadContextPool.bytes_per_slot(2, 4, 128, torch.bfloat16) == 2 * pool.k.numel() * 2


def test_kv_pool_and_head_pool_together_fit_the_budget_sglang_sizes_from():
    # Qwen3-30B-A3B: 48 layers x 4 kv heads x 128 x bf16 (K and V) per token; a 2-layer head
    target_cell, head = 2 * 48 * 4 * 128 * 2, HeadContextPool.bytes_per_slot(2, 4, 128, torch.bfloat16)
    budget = 20 * 2**30
    plain = _sglang_configurator(target_cell).calculate_pool_sizes(budget, 1).max_total_num_tokens
    conf = _sglang_configurator(target_cell)
    assert budget_head_pool(conf, head)
    tokens = conf.calculate_pool_sizes(budget, 1).max_total_num_tokens
    assert tokens * (target_cell + head) <= budget < (tokens + 1) * (target_cell + head)
    assert plain * (target_cell + head) > budget  # unbudgeted, the head pool would overrun it
    assert tokens < plain


def test_configurators_without_a_cell_size_are_left_alone():
    other = SimpleNamespace(kv_cache_dtype_str="auto")
    assert not budget_head_pool(other, 1024)
    assert not hasattr(other, "_cell_size")


def test_hook_budgets_the_target_pool_on_jetspec_servers_only(monkeypatch):
    from sglang.srt.model_executor import pool_configurator
    from sglang.srt.plugins.hook_registry import HookRegistry

    import sglang_jetspec.integration.hooks as hooks_module

    # the factory is the one thing stood in for: building SGLang's real configurator needs a
    # loaded model; what the hook changes is that configurator's sizing (tested above)
    monkeypatch.setattr(pool_configurator, "create_memory_pool_configurator",
                        lambda kvc: _sglang_configurator(1000))
    monkeypatch.setattr(HookRegistry, "_hooks", type(HookRegistry._hooks)(list, HookRegistry._hooks))
    monkeypatch.setattr(HookRegistry, "_patched", set(HookRegistry._patched) - {POOL_TARGET})
    monkeypatch.setattr(hooks_module, "_registered", False)
    monkeypatch.setattr(hooks_module, "head_pool_budget", dict(hooks_module.head_pool_budget))
    register_hooks()
    HookRegistry.apply_hooks()
    assert POOL_TARGET in HookRegistry._patched

    def kvc(algo, draft=False):
        sa = SimpleNamespace(speculative_algorithm=algo, speculative_draft_model_path=HEAD)
        return SimpleNamespace(server_args=sa, model_dtype=torch.bfloat16, is_draft_worker=draft)

    from sglang_jetspec.integration.server_args import load_head_config

    cfg = load_head_config(HEAD)
    per_slot = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 2
    assert pool_configurator.create_memory_pool_configurator(kvc("JETSPEC"))._cell_size == 1000 + per_slot
    assert hooks_module.head_pool_budget == {"bytes_per_slot": per_slot, "budgeted": True}
    for other in (kvc("EAGLE"), kvc(None), kvc("JETSPEC", draft=True)):
        assert pool_configurator.create_memory_pool_configurator(other)._cell_size == 1000
