"""Every HookRegistry patch JETSPEC applies to SGLang, named and explained here. Only one.

1. `sglang.srt.mem_cache.allocation_sizing.get_alloc_len_per_decode` (AROUND)
   Why: SGLang sizes each request's per-step KV reserve with EAGLE's formula,
   max(speculative_num_steps * speculative_eagle_topk, num_draft_tokens): an EAGLE draft
   writes one KV chain per top-k branch and step. JETSPEC's head writes no target KV; a round
   writes exactly `budget` (= num_draft_tokens) tree nodes. With the defaults (depth 15,
   width 7, budget 32) the formula reserves 105 slots per request per step (x2 for the
   double buffer) instead of 32, which throttles admission. Scope: only when the configured
   algorithm is JETSPEC (page size 1 is enforced at startup); otherwise SGLang's function runs
   unchanged. HookRegistry also rebinds modules that did `from ... import` it.
"""

from __future__ import annotations

ALGORITHM = "JETSPEC"
ALLOC_LEN_TARGET = "sglang.srt.mem_cache.allocation_sizing.get_alloc_len_per_decode"


def jetspec_alloc_len(algorithm: str | None, max_draft_tokens: int | None) -> int | None:
    """KV slots one JETSPEC request may take per decode step, or None (not JETSPEC)."""
    if algorithm is None or algorithm.upper() != ALGORITHM:
        return None
    if not max_draft_tokens or max_draft_tokens < 1:
        raise ValueError(f"JETSPEC needs speculative_num_draft_tokens >= 1, got {max_draft_tokens}")
    return int(max_draft_tokens)


def _alloc_len_per_decode(original, *args, **kwargs):
    from sglang.srt.runtime_context import get_spec, max_speculative_num_draft_tokens

    spec = get_spec()
    if spec.speculative_algorithm is None or spec.speculative_algorithm.upper() != ALGORITHM:
        return original(*args, **kwargs)
    return jetspec_alloc_len(spec.speculative_algorithm, max_speculative_num_draft_tokens())


_registered = False


def register_hooks() -> None:
    """Register the hooks above (idempotent); SGLang's loader applies them after plugins ran."""
    global _registered
    if _registered:
        return
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(ALLOC_LEN_TARGET, _alloc_len_per_decode, HookType.AROUND)
    _registered = True
