"""Profile the decode steps of real SGLang servers (plain and JETSPEC) with SGLang's own profiler.

For each server: start it, answer the prompt once (warm-up: weights packed, radix cache filled),
then call `/start_profile` for `steps` scheduler steps (CPU activity, plus GPU when there is one;
no stacks, no shapes: both slow every op down) and answer the prompt again, greedy (again and
again until the profiler has its steps), so the profiled steps are decode steps or verify rounds. The trace SGLang writes is summarised per span
(bench/trace_summary.py). The wall time of the second answer (after the warm-up, before the
profiler starts), and for JETSPEC its rounds, are reported beside it: the profiler's per-op cost inflates small-op-heavy code, so the spans
say where time goes, the unprofiled times say how much there is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sglang_jetspec.bench.trace_summary import SpanSummary, load_events, summarize
from sglang_jetspec.integration.server_process import LocalServer, ServerSpec


MAX_PROFILED_REQUESTS = 20


@dataclass
class ProfiledServer:
    label: str
    trace: Path
    summaries: list[SpanSummary]
    tokens: int          # tokens of the unprofiled answer
    seconds: float       # its wall time
    rounds: int | None   # its verify rounds (JETSPEC), None for plain decoding


def wait_for_trace(folder: Path, timeout_s: float = 120.0, settle_s: float = 2.0) -> Path:
    """The trace file SGLang writes into `folder` once the profiled steps are done: wait until
    one exists and its size has stopped changing for `settle_s`."""
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        files = sorted(folder.glob("*.trace.json*"))
        if files:
            size = files[-1].stat().st_size
            if last is not None and size == last[1] and size > 0 and time.time() - last[0] >= settle_s:
                return files[-1]
            if last is None or size != last[1]:
                last = (time.time(), size)
        time.sleep(0.5)
    raise TimeoutError(f"no finished profiler trace in {folder} after {timeout_s:.0f}s")


def profile_server(label: str, spec: ServerSpec, prompt_ids: list[int], max_new_tokens: int,
                   steps: int, out_dir: Path, env: dict | None = None) -> ProfiledServer:
    if steps < 1:
        raise ValueError(f"steps {steps} must be >= 1")
    folder = (out_dir / label).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.trace.json*"):
        old.unlink()
    greedy = {"temperature": 0}
    with LocalServer(spec, out_dir / f"{label}.log", env=env) as server:
        server.generate(prompt_ids, max_new_tokens, **greedy)  # warm-up; the prompt is cached after it
        t0 = time.perf_counter()
        resp = server.generate(prompt_ids, max_new_tokens, **greedy)
        seconds = time.perf_counter() - t0
        rounds = resp.get("meta_info", {}).get("spec_verify_ct")
        activities = ["CPU", "GPU"] if torch.cuda.is_available() else ["CPU"]
        server.post_text("/start_profile", {"output_dir": str(folder), "num_steps": steps,
                                            "activities": activities, "with_stack": False,
                                            "record_shapes": False}, timeout=60)
        for _ in range(MAX_PROFILED_REQUESTS):  # until the profiler has seen `steps` steps
            server.generate(prompt_ids, max_new_tokens, **greedy)
            if any(folder.glob("*.trace.json*")):
                break
        trace = wait_for_trace(folder)
    return ProfiledServer(label, trace, summarize(load_events(trace)), len(resp["output_ids"]), seconds,
                          int(rounds) if spec.head is not None and rounds is not None else None)
