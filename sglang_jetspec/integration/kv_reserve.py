"""The KV slots SGLang reserves per JETSPEC request and decode step: the server budget, or the
widest tree the next step may verify (issue 6: cache pressure lowers the budget BEFORE the
scheduler has to retract).

Why: before every decode step SGLang makes sure each running request owns
`committed + 2 * alloc_len` KV slots (allocation_sizing.get_alloc_reserve_per_decode) and
retracts requests when the pool, after evicting what the radix cache can give up, cannot hold
that. With alloc_len = the server budget, a batch whose adaptive width is 3 still claims
2 x 64 slots per request: under a tight pool that evicts cached prefixes other requests would
have reused, and then retracts requests that had room for the trees actually verified.

  SGLANG_JETSPEC_KV_RESERVE=follow  (default) alloc_len = the policy's `reserve_width` for the
      next step (budget_policy.py): twice the last width or the width the policy would choose
      with no reserve cap, whichever is larger, at least the width exploration will try next,
      within what fits in free + evictable KV; the step then never verifies more rows than
      that (the plan is capped by it).
  SGLANG_JETSPEC_KV_RESERVE=max     alloc_len = the server budget (SGLang's own sizing).

Static widths always reserve the server budget. Memory pool sizing at startup and the
req_to_token row headroom always use the server budget (no width exceeds it).

The value lives in this module because SGLang asks for it through a module-level function
(hooks.py wraps it) with no handle on the worker; the scheduler and the worker share the
process, and the worker writes it only between its steps.
"""

from __future__ import annotations

import os

from sglang_jetspec.integration.env_setting import env_choice

ENV = "SGLANG_JETSPEC_KV_RESERVE"
MODES = ("follow", "max")

_width: int | None = None  # None: not set (startup, static widths, `max`): the server budget


def mode_from_env(environ=os.environ) -> str:
    return env_choice(environ, ENV, MODES)


def set_width(width: int | None) -> None:
    """The widest tree the next decode step may verify (None: reserve the server budget)."""
    global _width
    if width is not None and width < 1:
        raise ValueError(f"reserved width {width} must be >= 1")
    _width = None if width is None else int(width)


def alloc_len(server_budget: int) -> int:
    """KV slots per request and decode step (before SGLang's 2x double buffer)."""
    return server_budget if _width is None else min(_width, server_budget)
