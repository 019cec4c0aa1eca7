import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("JETSPEC_CACHE_DIR", str(REPO / "build" / "cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# `make test` spreads test modules over two pytest-xdist workers (`-n 2 --dist loadfile`), one per
# core. xdist hands out modules in collection order, so the long end-to-end modules go first
# (longest-processing-time-first): the lighter ones then fill in behind them on whichever worker
# frees up, instead of one worker finishing with a 19-minute module while the other sits idle.
# Order by the module times of a full run here (the slowest first); modules not listed keep their
# file order after these. Only the order changes: every test still runs.
LONG_MODULES_FIRST = (
    "test_lossless_reference.py",
    "test_reliability_server.py",
    "test_bench_e2e.py",
    "test_integration_server_parity.py",
    "test_integration_e2e.py",
    "test_moe_jetspec_e2e.py",
    "test_moe_target.py",
    "test_generate_sglang.py",
    "test_demo.py",
    "test_integration_server_args.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order otherwise


@pytest.fixture(scope="session", autouse=True)
def _one_thread_for_the_session():
    """The same for module and session fixtures, which run before any function fixture."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test runs torch on ONE intra-op thread (a test may raise it itself). The tests' torch
    work is tiny ops or memory-bound SmolLM2 forwards, where a second OpenMP thread gains little
    and costs a lot as soon as anything else wants a core: the draft-vocabulary chi-square test
    took 29 s on one thread and was stopped after 570 s on two, beside a niced training job on
    this 2-core machine. Servers and `launch.*` subprocesses set their own threads."""
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
