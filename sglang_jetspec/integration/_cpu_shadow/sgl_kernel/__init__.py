"""Stand-in `sgl_kernel` for machines without a GPU (see sglang_jetspec/integration/cpu_support.py).

This directory is put first on sys.path / PYTHONPATH only by cpu_support.activate(), so that
SGLang's spawned processes import this instead of the CUDA-only wheel.
"""

import sys

from sglang_jetspec.integration.cpu_support import install_standin

install_standin(sys.modules[__name__])
