"""What SGLang's plugin loader runs in each of its processes (launcher, scheduler, ...).

Order matters: the CPU support must shadow `sgl_kernel` before anything imports SGLang's
kernels, and registering the algorithm imports SGLang's speculative registry.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

_done = False


def register() -> None:
    """Idempotent: CPU support (only without a GPU), the JETSPEC algorithm, its hooks."""
    global _done
    if _done:
        return
    from sglang_jetspec.integration import cpu_support

    if cpu_support.activate():
        logger.info("JetSpec: no GPU found, CPU support active (stand-in sgl_kernel, "
                    "%s attention for tree verify)", cpu_support.VERIFY_BACKEND)
    from sglang_jetspec.integration.hooks import register_hooks
    from sglang_jetspec.integration.registration import register_algorithm

    register_algorithm()
    register_hooks()  # applied by SGLang's loader right after the plugins ran
    _done = True
