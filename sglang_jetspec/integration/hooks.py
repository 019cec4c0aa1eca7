"""Every HookRegistry patch JETSPEC applies to SGLang, named and explained here. Six.

1. `sglang.srt.mem_cache.allocation_sizing.get_alloc_len_per_decode` (AROUND; the value
   follows the adaptive width under SGLANG_JETSPEC_KV_RESERVE=follow: kv_reserve.py)
   Why: SGLang sizes each request's per-step KV reserve with EAGLE's formula,
   max(speculative_num_steps * speculative_eagle_topk, num_draft_tokens): an EAGLE draft
   writes one KV chain per top-k branch and step. JETSPEC's head writes no target KV; a round
   writes exactly `budget` (= num_draft_tokens) tree nodes. With the defaults (depth 15,
   width 7, budget 32) the formula reserves 105 slots per request per step (x2 for the
   double buffer) instead of 32, which throttles admission. Scope: only when the configured
   algorithm is JETSPEC (page size 1 is enforced at startup); otherwise SGLang's function runs
   unchanged. HookRegistry also rebinds modules that did `from ... import` it.

2. `sglang.srt.sampling.sampling_params.SamplingParams.verify` (AFTER)
   Why: per-request tree settings travel in `custom_params["jetspec"]`
   (request_settings.py). SGLang validates sampling parameters in the tokenizer manager and
   answers HTTP 400 with the ValueError's text; checking the JETSPEC keys there turns a
   malformed override into that same 400 instead of a failure inside the scheduler. It only
   reads `custom_params["jetspec"]`; requests without it are untouched, on any algorithm.

3. `sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request` (BEFORE)
   Why: SGLang 0.5.23 admits a prompt of zero tokens (`"text": ""` with a tokenizer that adds
   no BOS) and `input_ids` outside the vocabulary; its scheduler then dies in the model forward
   (a reshape of 0 elements; an embedding index out of range), taking every other request with
   it. Seen on CPU with and without speculation. The hook turns both into the same HTTP 400
   the context-length check raises from this function. Scope: only when the server runs
   JETSPEC; other servers are untouched.

4. `sglang.srt.mem_cache.allocation_sizing.get_req_to_token_extra_context_len` (AROUND)
   Why: each decode step SGLang reserves 2 x alloc_len KV slots per request past its committed
   length (the double buffer of get_alloc_reserve_per_decode) and writes them into the
   request's req_to_token row, but for page size 1 sizes the row's headroom past the context
   as 4 + num_draft_tokens. EAGLE stays inside because its tokenizer also subtracts a reserve
   from the context budget; other algorithms do not. Near the end of the context a JETSPEC
   request then writes past its row (found by the reliability fuzz: on CPU a shape error that
   killed the scheduler; on GPU the Triton write has no bounds check and would corrupt the next
   row). The hook widens the headroom to hold the reserve, as SGLang already does for UNO.
   Scope: only when the configured algorithm is JETSPEC. Cost: 2 x budget int32 per row.

5. `sglang.srt.managers.scheduler_components.internal_state.SchedulerInternalStateController._add_speculative` (AFTER)
   Why: benchmarks and dashboards need what a JETSPEC round did (accepted-length histogram,
   tree sizes, time per phase: round_stats.py); SGLang reports only the mean accept length.
   The scheduler's internal state is what /get_server_info returns, so the hook adds the
   worker's cumulative counters there as `internal_states[0]["jetspec"]`. Scope: only when the
   scheduler's speculative worker is JETSPEC's; it reads counters, changes nothing.

6. `sglang.srt.model_executor.pool_configurator.create_memory_pool_configurator` (AROUND)
   Why: the head keeps its context K/V in a pool with one row per target KV slot
   (head_pool.py), allocated by the worker after SGLang sized its KV pool from
   --mem-fraction-static. Unbudgeted, that pool (2 x head layers x kv heads x head dim x dtype
   bytes per slot: 2/48 of a Qwen3-30B-A3B KV pool for a 2-layer head of its attention shape)
   comes out of the memory SGLang leaves for activations and graphs, where a large KV pool can
   run the device out of memory at the first big verify. EAGLE's draft KV is budgeted the same
   way (SGLang adds the draft layers to the per-token cell size). The hook adds the head's bytes
   per slot (HeadContextPool.bytes_per_slot) to the standard configurator's per-token cell size, so the KV pool and the head pool together fit
   the budget; for the other configurators (sliding-window, hybrid) it logs how much is not
   budgeted. Scope: only when the configured algorithm is JETSPEC, on the target's pools.
"""

from __future__ import annotations

from sglang_jetspec.integration import kv_reserve

ALGORITHM = "JETSPEC"
ALLOC_LEN_TARGET = "sglang.srt.mem_cache.allocation_sizing.get_alloc_len_per_decode"
VERIFY_TARGET = "sglang.srt.sampling.sampling_params.SamplingParams.verify"
VALIDATE_TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request"
ROW_EXTRA_TARGET = "sglang.srt.mem_cache.allocation_sizing.get_req_to_token_extra_context_len"
STATE_TARGET = ("sglang.srt.managers.scheduler_components.internal_state."
                "SchedulerInternalStateController._add_speculative")
POOL_TARGET = "sglang.srt.model_executor.pool_configurator.create_memory_pool_configurator"
# what hook 6 did in this process: bytes per slot added to SGLang's cell size (None: not run)
head_pool_budget: dict = {"bytes_per_slot": None, "budgeted": False}


def is_jetspec(algorithm: str | None) -> bool:
    """Whether a configured speculative algorithm name is JETSPEC (any case)."""
    return algorithm is not None and str(algorithm).upper() == ALGORITHM


def jetspec_alloc_len(algorithm: str | None, max_draft_tokens: int | None) -> int | None:
    """KV slots one JETSPEC request may take per decode step, or None (not JETSPEC)."""
    if not is_jetspec(algorithm):
        return None
    if not max_draft_tokens or max_draft_tokens < 1:
        raise ValueError(f"JETSPEC needs speculative_num_draft_tokens >= 1, got {max_draft_tokens}")
    return int(max_draft_tokens)


def _alloc_len_per_decode(original, *args, **kwargs):
    from sglang.srt.runtime_context import get_spec, max_speculative_num_draft_tokens

    spec = get_spec()
    if not is_jetspec(spec.speculative_algorithm):
        return original(*args, **kwargs)
    # the server budget, or the narrower width the worker will keep to next step (kv_reserve.py)
    return kv_reserve.alloc_len(jetspec_alloc_len(spec.speculative_algorithm,
                                                  max_speculative_num_draft_tokens()))


def row_headroom(original: int, algorithm: str | None, reserve_per_decode: int, page_size: int) -> int:
    """req_to_token row headroom past the context: room for the decode reserve on JETSPEC."""
    if not is_jetspec(algorithm):
        return original
    return max(original, reserve_per_decode + page_size - 1)


def _row_extra(original, *args, **kwargs):
    from sglang.srt.mem_cache.allocation_sizing import get_alloc_page_size
    from sglang.srt.runtime_context import get_spec, max_speculative_num_draft_tokens

    extra = original(*args, **kwargs)
    algorithm = get_spec().speculative_algorithm
    if not is_jetspec(algorithm):  # SGLang's answer, without computing a reserve nobody uses
        return extra
    # sized for the server budget (2x double buffer), never for the current narrower reserve
    reserve = 2 * jetspec_alloc_len(algorithm, max_speculative_num_draft_tokens())
    return row_headroom(extra, algorithm, reserve, get_alloc_page_size())


def prompt_problem(algorithm: str | None, input_ids, has_other_input: bool,
                   vocab_size: int | None) -> str | None:
    """The 400 message for a prompt the scheduler would die on (JETSPEC servers), else None."""
    if not is_jetspec(algorithm) or has_other_input or input_ids is None:
        return None
    if len(input_ids) == 0:
        return ("the prompt is empty (0 tokens after tokenization); send at least one token "
                "(text, input_ids or a chat message)")
    if vocab_size:
        bad = next((t for t in input_ids if not 0 <= int(t) < vocab_size), None)
        if bad is not None:
            return f"input_ids contains token id {bad} outside the vocabulary [0, {vocab_size})"
    return None


def _reject_bad_prompt(manager, obj, input_ids, *args, **kwargs):
    other = any(getattr(obj, name, None) is not None
                for name in ("input_embeds", "image_data", "video_data", "audio_data"))
    algorithm = getattr(getattr(manager, "server_args", None), "speculative_algorithm", None)
    vocab = getattr(getattr(manager, "model_config", None), "vocab_size", None)
    problem = prompt_problem(algorithm, input_ids, other, vocab)
    if problem is not None:
        raise ValueError(problem)
    return None  # arguments unchanged


def _add_round_stats(result, controller, state, *args, **kwargs):
    worker = getattr(getattr(controller, "scheduler", None), "draft_worker", None)
    stats = getattr(worker, "stats", None)
    if stats is not None and hasattr(stats, "snapshot"):
        state["jetspec"] = stats.snapshot()
    return result


def budget_head_pool(configurator, per_slot: int) -> bool:
    """Add the head pool's bytes per slot to a pool configurator's per-token cell size; False
    (nothing changed) for a configurator without one (sliding-window and hybrid pools)."""
    cell = getattr(configurator, "_cell_size", None)
    if not isinstance(cell, int) or cell <= 0:
        return False
    configurator._cell_size = cell + per_slot
    return True


def _budget_pool(original, kvc, *args, **kwargs):
    import logging

    configurator = original(kvc, *args, **kwargs)
    sa = getattr(kvc, "server_args", None)
    if getattr(kvc, "is_draft_worker", False) or not is_jetspec(getattr(sa, "speculative_algorithm", None)):
        return configurator
    from sglang_jetspec.integration.head_pool import HeadContextPool
    from sglang_jetspec.integration.server_args import load_head_config

    head = load_head_config(sa.speculative_draft_model_path)
    # the worker allocates the pool in the target's dtype (worker.py: the drafter's dtype)
    per_slot = HeadContextPool.bytes_per_slot(head.num_hidden_layers, head.num_key_value_heads, head.head_dim,
                                              kvc.model_dtype)
    budgeted = budget_head_pool(configurator, per_slot)
    head_pool_budget.update(bytes_per_slot=per_slot, budgeted=budgeted)
    if not budgeted:
        logging.getLogger(__name__).warning(
            "JETSPEC: the head context pool (%d bytes per KV slot) is not budgeted by SGLang's %s; "
            "leave room for it with a lower --mem-fraction-static", per_slot, type(configurator).__name__)
    return configurator


_registered = False


def register_hooks() -> None:
    """Register the hooks above (idempotent); SGLang's loader applies them after plugins ran."""
    global _registered
    if _registered:
        return
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sglang_jetspec.integration.request_settings import verify_hook

    HookRegistry.register(ALLOC_LEN_TARGET, _alloc_len_per_decode, HookType.AROUND)
    HookRegistry.register(VERIFY_TARGET, verify_hook, HookType.AFTER)
    HookRegistry.register(VALIDATE_TARGET, _reject_bad_prompt, HookType.BEFORE)
    HookRegistry.register(ROW_EXTRA_TARGET, _row_extra, HookType.AROUND)
    HookRegistry.register(STATE_TARGET, _add_round_stats, HookType.AFTER)
    HookRegistry.register(POOL_TARGET, _budget_pool, HookType.AROUND)
    _registered = True
