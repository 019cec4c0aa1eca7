"""A real `python -m sglang.launch_server` on 127.0.0.1 for the end-to-end tests: its own
process group (always killed at the end), readiness by /health, small HTTP helpers."""

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

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 480


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `python -m sglang.launch_server` in its own process group."""

    def __init__(self, model: Path, log: Path, *extra: str, env: dict | None = None):
        self.port = _free_port()
        # static verify widths: these tests compare round counts with the reference decoder and
        # need drafted trees; the adaptive width is covered by tests/test_bench_e2e.py
        extra_env = {"SGLANG_JETSPEC_BUDGET": "static", **(env or {})}
        env = dict(os.environ, SGLANG_USE_CPU_ENGINE="1", OMP_NUM_THREADS="1",
                   TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
                   XDG_CACHE_HOME=str(ROOT / "build" / "xdg-cache"),
                   TORCHINDUCTOR_CACHE_DIR=str(ROOT / "build" / "inductor"),
                   TRITON_CACHE_DIR=str(ROOT / "build" / "triton"), **extra_env)
        # --sleep-on-idle: an idle SGLang scheduler otherwise spins a whole core; a module keeps
        # up to four servers, so the idle ones used to take the CPU from the one under test
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model),
               "--device", "cpu", "--dtype", "float32", "--attention-backend", "torch_native",
               "--host", "127.0.0.1", "--port", str(self.port), "--max-total-tokens", "2048",
               "--skip-server-warmup", "--sleep-on-idle", *extra]
        if "--max-running-requests" not in extra:
            cmd += ["--max-running-requests", "8"]
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

    def generate(self, input_ids: list[int], max_new_tokens: int, temperature: float = 0.0, **params) -> dict:
        return self.post("/generate", {"input_ids": input_ids, "sampling_params": {
            "temperature": temperature, "max_new_tokens": max_new_tokens, **params}})

    def post(self, path: str, body: dict, timeout: float = 600) -> dict:
        req = urllib.request.Request(self.url(path), json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=timeout).read())

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def mark(self) -> None:
        """Remember the log size (startup logs a harmless freeze_gc traceback without warmup)."""
        self.log_mark = len(self.log.read_text(errors="replace"))

    def log_since_mark(self) -> str:
        return self.log.read_text(errors="replace")[getattr(self, "log_mark", 0):]

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




def run_all(fn, items) -> list:
    """fn(*item) for every item, all at once (so the server batches them), results in order."""
    with ThreadPoolExecutor(len(items)) as ex:
        return list(ex.map(lambda it: fn(*it), items))
