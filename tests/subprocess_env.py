"""Environment for test subprocesses that must not inherit what the JETSPEC plugin set up here.

Importing certain SGLang modules in the pytest process loads SGLang's plugins, and on a machine
without a GPU the JETSPEC plugin's CPU support then sets SGLANG_USE_CPU_ENGINE=1 and puts its
stand-in `sgl_kernel` first on PYTHONPATH (it must, for SGLang's own spawned processes). A test
that runs SGLang's or our Triton kernels under TRITON_INTERPRET=1 in a subprocess needs the
plain environment instead, whatever ran before it in the session.
"""

import os

from sglang_jetspec.integration.cpu_support import SHADOW_DIR


def clean_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.pop("SGLANG_USE_CPU_ENGINE", None)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != SHADOW_DIR]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + parts)
    env.update(extra)
    return env
