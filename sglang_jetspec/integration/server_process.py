"""A local `python -m sglang.launch_server` run as a child process: start it on 127.0.0.1 with or
without JETSPEC, wait until /health answers, post requests, and always stop it (the whole
process group, since SGLang spawns its scheduler and detokenizer as children).

Used by the main job (launch/demo.py), `launch.generate --engine sglang` and benchmarks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class ServerSpec:
    model: str
    head: str | None = None            # None: plain decoding (no speculation)
    budget: int | None = None          # --speculative-num-draft-tokens (default: the head's)
    width: int | None = None           # --speculative-eagle-topk
    depth: int | None = None           # --speculative-num-steps
    max_running_requests: int = 16
    max_total_tokens: int = 8192
    extra: list[str] = field(default_factory=list)

    def command(self, port: int) -> list[str]:
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(self.model),
               "--host", "127.0.0.1", "--port", str(port), "--skip-server-warmup",
               "--max-running-requests", str(self.max_running_requests),
               "--max-total-tokens", str(self.max_total_tokens)]
        if not torch.cuda.is_available():
            cmd += ["--device", "cpu", "--dtype", "float32", "--attention-backend", "torch_native"]
            if "--sleep-on-idle" not in self.extra:  # an idle scheduler would spin a whole core
                cmd.append("--sleep-on-idle")
        if self.head is not None:
            cmd += ["--speculative-algorithm", "JETSPEC", "--speculative-draft-model-path", str(self.head)]
            for flag, value in (("--speculative-num-draft-tokens", self.budget),
                                ("--speculative-eagle-topk", self.width),
                                ("--speculative-num-steps", self.depth)):
                if value is not None:
                    cmd += [flag, str(value)]
        return cmd + list(self.extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """`with LocalServer(spec) as server: server.generate(...)`; start() returns at once,
    wait_ready() blocks, so several servers can start side by side."""

    def __init__(self, spec: ServerSpec, log_path: str | Path | None = None, env: dict | None = None):
        self.spec = spec
        self.port = free_port()
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="sglang_", suffix=".log")[1])
        self.env = dict(os.environ, **(env or {}))
        self.env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalServer":
        if not torch.cuda.is_available():
            self.env.setdefault("SGLANG_USE_CPU_ENGINE", "1")
            # one intra-op thread per server unless the caller says otherwise: SGLang's scheduler
            # polls while idle, and OpenMP threads spinning next to it made plain decoding ~9x
            # slower on a 2-core machine (0.9 vs 8.0 tok/s, two servers side by side)
            self.env.setdefault("OMP_NUM_THREADS", "1")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.spec.command(self.port), env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def healthy(self) -> bool:
        try:
            return urllib.request.urlopen(self.url + "/health", timeout=5).status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 600) -> "LocalServer":
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"SGLang server exited during startup (code {code}); log "
                                   f"{self.log_path}:\n{self.tail()}")
            if self.healthy():
                return self
            time.sleep(2)
        self.stop()
        raise TimeoutError(f"SGLang server not ready after {timeout_s:.0f}s; log {self.log_path}:\n{self.tail()}")

    def post(self, path: str, body: dict, timeout: float = 1800) -> dict:
        return json.loads(self.post_text(path, body, timeout))

    def post_text(self, path: str, body: dict, timeout: float = 1800) -> str:
        """POST a JSON body; the reply as text (some endpoints, e.g. /start_profile, answer plain text)."""
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            return urllib.request.urlopen(req, timeout=timeout).read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{path} answered HTTP {e.code}: {e.read().decode(errors='replace')[:500]}") from e

    def get_json(self, path: str, timeout: float = 60) -> dict:
        try:
            return json.loads(urllib.request.urlopen(self.url + path, timeout=timeout).read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{path} answered HTTP {e.code}: {e.read().decode(errors='replace')[:500]}") from e

    def generate(self, input_ids: list[int], max_new_tokens: int, **sampling) -> dict:
        return self.post("/generate", {"input_ids": input_ids,
                                       "sampling_params": {"max_new_tokens": max_new_tokens, **sampling}})

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # children can outlive the launcher: sweep the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "LocalServer":
        if self.proc is None:
            self.start()
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_side_by_side(specs: list[ServerSpec], log_dir: str | Path | None = None,
                       timeout_s: float = 900) -> list[LocalServer]:
    """Start several servers at once (startup is mostly imports) and wait for all of them;
    on failure every one is stopped before the error propagates."""
    servers = []
    try:
        for i, spec in enumerate(specs):
            log = Path(log_dir) / f"server{i}.log" if log_dir else None
            servers.append(LocalServer(spec, log).start())
        for s in servers:
            s.wait_ready(timeout_s)
        return servers
    except BaseException:
        for s in servers:
            s.stop()
        raise


def result_from_response(resp: dict, seconds: float):
    """A GenerationResult (the format of every engine) from a /generate response."""
    from sglang_jetspec.reference.results import GenerationResult

    meta = resp.get("meta_info", {})
    finish = (meta.get("finish_reason") or {}).get("type", "length")
    rounds = int(meta.get("spec_verify_ct", 0) or 0)
    out = list(resp["output_ids"])
    # the server reports rounds, not per-round counts: `accepted` stays empty; the first token
    # comes from the prefill, so the mean accepted length is (len(output_ids) - 1) / rounds
    return GenerationResult(output_ids=out, text=resp.get("text", ""), rounds=rounds, accepted=[],
                            seconds=seconds, finish_reason="stop" if finish == "stop" else "length")
