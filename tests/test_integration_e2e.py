"""End to end: the REAL SGLang server with --speculative-algorithm JETSPEC on CPU produces
exactly the tokens of the same server without speculation (greedy).

Two servers (plain and JETSPEC, random untrained head, budget 8) start side by side on
127.0.0.1 and are always killed (process group) at the end. A random head accepts almost
nothing, so this checks losslessness and the plumbing, not speed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 480
PROMPTS = [  # (prompt, max_new_tokens): 32-token runs plus first-token finishes
    ("The capital of France is", 32),
    ("def fibonacci(n):", 32),
    ("Once upon a time, in a small village,", 32),
    ("List three colors: 1.", 32),
    ("Water boils at", 1),
    ("The opposite of hot is", 3),
]
LONG_PROMPT = " ".join(f"Step {i}: add {i} apples to the basket." for i in range(1, 25)) + " In total"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `python -m sglang.launch_server` in its own process group."""

    def __init__(self, model: Path, log: Path, *extra: str):
        self.port = _free_port()
        env = dict(os.environ, SGLANG_USE_CPU_ENGINE="1", OMP_NUM_THREADS="1",
                   TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
                   XDG_CACHE_HOME=str(ROOT / "build" / "xdg-cache"),
                   TORCHINDUCTOR_CACHE_DIR=str(ROOT / "build" / "inductor"),
                   TRITON_CACHE_DIR=str(ROOT / "build" / "triton"))
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model),
               "--device", "cpu", "--dtype", "float32", "--attention-backend", "torch_native",
               "--host", "127.0.0.1", "--port", str(self.port), "--max-total-tokens", "2048",
               "--max-running-requests", "8", "--skip-server-warmup", *extra]
        self.log = log
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def healthy(self) -> bool:
        try:
            return urllib.request.urlopen(self.url("/health"), timeout=5).status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, deadline: float) -> None:
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.tail()}")
            if self.healthy():
                return
            time.sleep(3)
        raise TimeoutError(f"server not ready after {STARTUP_TIMEOUT_S}s:\n{self.tail()}")

    def generate(self, prompt: str, max_new_tokens: int) -> dict:
        body = json.dumps({"text": prompt, "sampling_params": {
            "temperature": 0.0, "max_new_tokens": max_new_tokens}}).encode()
        req = urllib.request.Request(self.url("/generate"), body, {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=300).read())

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # children outlive a launcher that ignores SIGTERM: sweep the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _save_random_head(target: Path, folder: Path) -> None:
    from sglang_jetspec.core.checkpoint import save_head
    from sglang_jetspec.core.head import DraftHead
    from sglang_jetspec.core.head_config import HeadConfig

    cfg_t = json.loads((target / "config.json").read_text())
    cfg = HeadConfig.for_target(cfg_t["hidden_size"], cfg_t["num_hidden_layers"],
                                cfg_t["vocab_size"], num_layers=1, mask_token_id=16)
    torch.manual_seed(0)
    save_head(DraftHead(cfg), str(folder))


@pytest.fixture(scope="module")
def servers(smollm2_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    _save_random_head(smollm2_dir, tmp / "head")
    started = []
    try:
        plain = Server(smollm2_dir, tmp / "plain.log")
        started.append(plain)
        spec = Server(smollm2_dir, tmp / "jetspec.log", "--speculative-algorithm", "JETSPEC",
                      "--speculative-draft-model-path", str(tmp / "head"),
                      "--speculative-num-draft-tokens", "8")
        started.append(spec)
        deadline = time.time() + STARTUP_TIMEOUT_S
        plain.wait_ready(deadline)
        spec.wait_ready(deadline)
        yield plain, spec
    finally:
        for s in started:
            s.kill()


def _run_all(server: Server, items) -> list[dict]:
    with ThreadPoolExecutor(len(items)) as ex:  # concurrent: the JETSPEC batch has several rows
        return list(ex.map(lambda pm: server.generate(*pm), items))


def test_greedy_outputs_equal_the_plain_server(servers):
    plain, spec = servers
    want = _run_all(plain, PROMPTS)
    got = _run_all(spec, PROMPTS)
    for (prompt, n), w, g in zip(PROMPTS, want, got):
        assert g["output_ids"] == w["output_ids"], (prompt, w["output_ids"], g["output_ids"])
        assert g["meta_info"]["finish_reason"] == w["meta_info"]["finish_reason"], prompt
        if len(g["output_ids"]) > 1:  # decode rounds ran through JETSPEC's verify
            assert g["meta_info"]["spec_verify_ct"] >= 1, g["meta_info"]
    assert max(len(w["output_ids"]) for w in want) == 32


def test_radix_cache_hit_keeps_tokens_and_acceptance(servers):
    """The head's context lives in a pool keyed by the target's KV slots, so a prompt whose
    prefix comes from the radix cache drafts from the same context as the first time."""
    plain, spec = servers
    first = spec.generate(LONG_PROMPT, 24)
    second = spec.generate(LONG_PROMPT, 24)
    reference = plain.generate(LONG_PROMPT, 24)
    assert second["meta_info"]["cached_tokens"] >= first["meta_info"]["prompt_tokens"] - 1
    assert first["output_ids"] == second["output_ids"] == reference["output_ids"]
    for key in ("spec_verify_ct", "spec_num_correct_drafts", "spec_accept_length"):
        assert first["meta_info"][key] == second["meta_info"][key], key


def test_server_survives_the_idle_memory_check(servers):
    """SGLang checks for leaked KV slots when idle and treats a leak as an error."""
    _, spec = servers
    time.sleep(6)
    assert spec.proc.poll() is None, spec.tail()
    assert spec.healthy()
    assert "Traceback" not in spec.log.read_text(errors="replace"), spec.tail()
