import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("JETSPEC_CACHE_DIR", str(REPO / "build" / "cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def one_thread():
    """Tiny torch ops on a shared 2-core machine: extra threads only add contention (10x slower).
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from sglang_jetspec.model_store import model_path

    return model_path("smollm2")


@pytest.fixture(scope="session")
def smollm2_target(smollm2_dir):
    from sglang_jetspec.reference.target import HFTarget

    return HFTarget(smollm2_dir)
