"""A real `python -m sglang.launch_server` on 127.0.0.1 for the end-to-end tests.

The command line, process group and readiness check are the product's own
(`sglang_jetspec.integration.server_process`: ServerSpec + LocalServer), so the tests start
servers exactly as `launch.generate --engine sglang`, the main job and the benchmarks do. This
file adds only what the tests need on top: small CPU-friendly limits, static verify widths,
caches under build/, a log mark, and an HTTP helper that lets HTTP errors through unwrapped.
"""

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sglang_jetspec.integration.server_process import LocalServer, ServerSpec

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 480
# the test servers' limits unless a test passes the flag itself
DEFAULT_LIMITS = {"--max-running-requests": 8, "--max-total-tokens": 2048}


def spec_for_test(model: Path, extra: tuple[str, ...]) -> ServerSpec:
    """ServerSpec for a test server: the flags in DEFAULT_LIMITS go into the spec's fields (the
    value in ``extra`` when the test gives one), every other flag stays in ``extra``."""
    extra, limits = list(extra), dict(DEFAULT_LIMITS)
    for flag in DEFAULT_LIMITS:
        if flag in extra:
            i = extra.index(flag)
            limits[flag] = int(extra[i + 1])
            del extra[i : i + 2]
    # --sleep-on-idle (added by ServerSpec on CPU): an idle SGLang scheduler otherwise spins a
    # whole core, and a module keeps up to four servers beside the one under test
    return ServerSpec(model=str(model), max_running_requests=limits["--max-running-requests"],
                      max_total_tokens=limits["--max-total-tokens"], extra=extra)


# A CPU test server grows to ~3-4 GB, a module keeps up to four, and `make test` runs two modules
# at once: 3 servers + the reference decoder took 11.8 GB here, and one such module beside another
# got a scheduler OOM-killed on this 24 GB machine. A server starts only once this much memory is
# available (or after MEMORY_WAIT_S, when it starts anyway and the test reports what happens).
MIN_AVAILABLE_GB = 6.0
MEMORY_WAIT_S = 600


def available_gb() -> float:
    """MemAvailable from /proc/meminfo in GB (infinite where there is no such file)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def wait_for_memory(min_gb: float = MIN_AVAILABLE_GB, timeout_s: float = MEMORY_WAIT_S) -> float:
    """Block until min_gb are available or timeout_s passed; returns the seconds waited."""
    start = time.monotonic()
    while available_gb() < min_gb and time.monotonic() - start < timeout_s:
        time.sleep(5)
    return time.monotonic() - start


class Server:
    """One test server in its own process group (LocalServer), with the tests' helpers."""

    def __init__(self, model: Path, log: Path, *extra: str, env: dict | None = None):
        wait_for_memory()
        # static verify widths: these tests compare round counts with the reference decoder and
        # need drafted trees; the adaptive width is covered by tests/test_bench_e2e.py
        env = {"SGLANG_JETSPEC_BUDGET": "static", "SGLANG_USE_CPU_ENGINE": "1", "OMP_NUM_THREADS": "1",
               "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
               "XDG_CACHE_HOME": str(ROOT / "build" / "xdg-cache"),
               "TORCHINDUCTOR_CACHE_DIR": str(ROOT / "build" / "inductor"),
               "TRITON_CACHE_DIR": str(ROOT / "build" / "triton"), **(env or {})}
        self.log = Path(log)
        self._server = LocalServer(spec_for_test(model, extra), self.log, env=env).start()
        self.port, self.proc = self._server.port, self._server.proc
        self.log_mark = 0

    def url(self, path: str) -> str:
        return self._server.url + path

    def healthy(self) -> bool:
        return self._server.healthy()

    def wait_ready(self, deadline: float) -> None:
        self._server.wait_ready(max(1.0, deadline - time.time()))

    def generate(self, input_ids: list[int], max_new_tokens: int, temperature: float = 0.0, **params) -> dict:
        return self.post("/generate", {"input_ids": input_ids, "sampling_params": {
            "temperature": temperature, "max_new_tokens": max_new_tokens, **params}})

    def post(self, path: str, body: dict, timeout: float = 600) -> dict:
        """POST JSON; an HTTP error status raises urllib's HTTPError (tests inspect it)."""
        req = urllib.request.Request(self.url(path), json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=timeout).read())

    def tail(self, n: int = 4000) -> str:
        return self._server.tail(n)

    def mark(self) -> None:
        """Remember the log size (startup logs a harmless freeze_gc traceback without warmup)."""
        self.log_mark = len(self.log.read_text(errors="replace"))

    def log_since_mark(self) -> str:
        return self.log.read_text(errors="replace")[self.log_mark:]

    def kill(self) -> None:
        self._server.stop()


def run_all(fn, items) -> list:
    """fn(*item) for every item, all at once (so the server batches them), results in order."""
    with ThreadPoolExecutor(len(items)) as ex:
        return list(ex.map(lambda it: fn(*it), items))
