"""The command line LocalServer gives `python -m sglang.launch_server` (no server is started)."""

import pytest
import torch

from sglang_jetspec.integration.server_process import ServerSpec


def test_cpu_servers_sleep_when_idle_and_the_flag_is_never_doubled():
    plain = ServerSpec("target").command(30000)
    asked = ServerSpec("target", "head", budget=8, extra=["--sleep-on-idle"]).command(30000)
    if torch.cuda.is_available():  # GPU servers keep SGLang's default
        assert "--sleep-on-idle" not in plain
    else:  # an idle scheduler would otherwise spin a whole core of the CPU serving requests
        assert plain.count("--sleep-on-idle") == 1
    assert asked.count("--sleep-on-idle") == 1
    assert asked[asked.index("--speculative-num-draft-tokens") + 1] == "8"
    assert plain[plain.index("--port") + 1] == "30000"


def test_the_test_servers_command_takes_each_limit_once_and_a_tests_own_value_wins():
    from server_harness import spec_for_test

    default = spec_for_test("target", ("--speculative-algorithm", "JETSPEC")).command(30000)
    own = spec_for_test("target", ("--max-total-tokens", "4096", "--speculative-algorithm", "JETSPEC",
                                   "--max-running-requests", "16")).command(30000)
    for cmd, running, total in ((default, "8", "2048"), (own, "16", "4096")):
        assert cmd.count("--max-running-requests") == 1 and cmd.count("--max-total-tokens") == 1
        assert cmd[cmd.index("--max-running-requests") + 1] == running
        assert cmd[cmd.index("--max-total-tokens") + 1] == total
        assert cmd[cmd.index("--speculative-algorithm") + 1] == "JETSPEC"
        assert cmd.count("--speculative-algorithm") == 1


def test_test_servers_wait_for_memory(monkeypatch):
    """tests/server_harness.py starts a server only when enough memory is available, and gives up
    waiting after its timeout (the server then starts and the test reports what happens)."""
    import server_harness

    readings = iter([1.0, 2.0, 7.0])
    monkeypatch.setattr(server_harness, "available_gb", lambda: next(readings))
    monkeypatch.setattr(server_harness.time, "sleep", lambda s: None)
    server_harness.wait_for_memory(min_gb=6.0, timeout_s=60)
    with pytest.raises(StopIteration):
        next(readings)  # it read until 7 GB were there
    monkeypatch.setattr(server_harness, "available_gb", lambda: 1.0)
    assert server_harness.wait_for_memory(min_gb=6.0, timeout_s=0.05) >= 0.05


def test_available_memory_is_read():
    import server_harness

    assert 0 < server_harness.available_gb() < 2**20
