"""moe_kernels' Triton kernels against their torch references (tests/moe_kernels_cases.py), run in
a fresh process with TRITON_INTERPRET=1 from the start and the plain environment: in the pytest
process, SGLang's plugins (loaded by whichever earlier test imported SGLang) leave interpreted
kernels failing with "Cannot call @triton.jit'd outside of the scope of a kernel"."""

import subprocess
import sys
from pathlib import Path

from subprocess_env import clean_env

CASES = Path(__file__).with_name("moe_kernels_cases.py")


def test_moe_kernels_match_their_references_interpreted():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)],
                          env=clean_env(TRITON_INTERPRET="1", OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=600, cwd=CASES.parent.parent)
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "failed" not in proc.stdout, tail
