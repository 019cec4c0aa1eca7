"""The command line LocalServer gives `python -m sglang.launch_server` (no server is started)."""

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
