"""A whole benchmark run: every server, every configuration, workload and batch size.

Every server starts first (with SGLang's --sleep-on-idle: an idle scheduler otherwise spins a
whole core, measured 5 cpu-seconds in 5 s, which on a 2-core machine would slow the server being
measured), then the measurements run CELL BY CELL: for each workload and batch size, every
configuration of every server back to back, `ar` first. A cell's numbers are thus taken within
a minute or two of each other, not half an hour apart: on this shared CPU the same static
budget measured 0.89x and 1.11x `ar` in two runs of the server-by-server order. A server that
cannot start on this machine (e.g. an algorithm that needs a GPU) is recorded as skipped with
the reason, and the run goes on. Each server keeps its own state across cells (the adaptive
width's statistics see the workloads in the same order as before).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sglang_jetspec.bench.methods import (AUTO_MAX_RESERVE_SERVER, AUTO_SERVER, AUTO_SERVERS, FULL_VOCAB_SERVER,
                                          HEAD_SERVERS, NO_EXPERT_SERVER, NO_PRIOR_SERVER, ONEDNN_AR, ONEDNN_SERVERS,
                                          VARIANT_SERVERS, Config, max_budget,
                                          servers_needed)
from sglang_jetspec.bench.runner import Measurement, compare_to_ar, measure, merge_repeats
from sglang_jetspec.bench.workloads import WorkItem

SCHEMA_VERSION = 1
WARMUP_REQUESTS = 3  # full-length requests each server answers before its first measurement
# every server is up for the whole run: an idle one must sleep in a poll, not spin a core
SLEEP_ON_IDLE = ["--sleep-on-idle"]


@dataclass
class BenchPlan:
    model: str
    heads: dict                         # server key -> head folder (jetspec, bidirectional)
    configs: list[Config]
    workloads: dict[str, list[WorkItem]]
    batch_sizes: list[int]
    max_new_tokens: int
    num_prompts: int                    # per workload and batch size (at least the batch size)
    width: int | None = None
    depth: int | None = None
    ngram_draft_tokens: int = 8
    mixed_load: list[int] = field(default_factory=list)   # concurrency phases of a mixed load
    serving_rates: list[float] = field(default_factory=list)
    serving_prompts: int = 8
    max_total_tokens: int | None = None  # KV pool size of every server (None: roomy)
    expert_trace: str | None = None      # the expert-aware-off server writes its expert trace here
    auto_max_width: int | None = None    # adaptive servers' largest width (default: largest static budget)
    standalone_draft: str | None = None  # draft model of method standalone (SGLang STANDALONE)
    standalone_steps: int = 4            # its chain length (num-draft-tokens = steps + 1)
    repeats: int = 1                     # each cell measured this many times, interleaved
    warmup_passes: int = 0               # unmeasured passes of the first cell before measuring


def server_spec(plan: BenchPlan, key: str):
    from sglang_jetspec.integration.server_process import ServerSpec

    bs = max(plan.batch_sizes + plan.mixed_load)
    common = dict(max_running_requests=max(bs, 1),
                  max_total_tokens=plan.max_total_tokens or max(8192, bs * 1024))
    if key in ("ar", ONEDNN_AR):
        return ServerSpec(plan.model, extra=SLEEP_ON_IDLE, **common)
    if key in ("ngram", "standalone"):
        if key == "ngram":
            extra = ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", str(plan.ngram_draft_tokens)]
        else:
            if not plan.standalone_draft:
                raise ValueError("method standalone needs a draft model (--standalone-draft DIR)")
            k = plan.standalone_steps
            extra = ["--speculative-algorithm", "STANDALONE", "--speculative-draft-model-path", plan.standalone_draft,
                     "--speculative-num-steps", str(k), "--speculative-eagle-topk", "1",
                     "--speculative-num-draft-tokens", str(k + 1)]
            draft_len, target_len = context_length(plan.standalone_draft), context_length(plan.model)
            if draft_len and target_len and draft_len < target_len:
                # SGLang refuses a draft whose context is shorter than the target's (e.g. the MoE
                # target, 4096, drafting for SmolLM2, 8192): serve at the draft's length
                extra += ["--context-length", str(draft_len)]
        if not torch.cuda.is_available():  # SGLang's torch_native attention ignores tree masks
            from sglang_jetspec.integration.cpu_support import VERIFY_BACKEND
            extra += ["--attention-backend", VERIFY_BACKEND]
        return ServerSpec(plan.model, extra=extra + SLEEP_ON_IDLE, **common)
    if key in HEAD_SERVERS:
        head = plan.heads["jetspec" if key in AUTO_SERVERS + tuple(VARIANT_SERVERS) else key]
        return ServerSpec(plan.model, head, budget=max_budget(plan.configs, key, plan.auto_max_width),
                          width=plan.width, depth=plan.depth, extra=SLEEP_ON_IDLE, **common)
    raise ValueError(f"no server for {key!r}")


def context_length(model_dir: str | None) -> int | None:
    """max_position_embeddings of a Hugging Face model folder (None without a readable config)."""
    try:
        with open(Path(model_dir) / "config.json") as f:
            n = json.load(f).get("max_position_embeddings")
    except (OSError, TypeError, ValueError):
        return None
    return int(n) if n else None


def server_env(key: str, expert_trace: str | None = None) -> dict:
    """Head servers run static widths, except the `auto` ones (budget_policy.py), whose KV
    reserve follows the width or stays at the budget (kv_reserve.py). The -onednn pair runs
    packed oneDNN CPU linear layers (integration/cpu_linear.py)."""
    if key == ONEDNN_AR:
        return {"SGLANG_JETSPEC_CPU_LINEAR": "onednn"}
    if key not in HEAD_SERVERS:
        return {}
    env = {"SGLANG_JETSPEC_BUDGET": "adaptive" if key in AUTO_SERVERS else "static"}
    if key in AUTO_SERVERS:
        env["SGLANG_JETSPEC_KV_RESERVE"] = "max" if key == AUTO_MAX_RESERVE_SERVER else "follow"
    if key == NO_EXPERT_SERVER:
        env["SGLANG_JETSPEC_EXPERT_AWARE"] = "off"
        if expert_trace:  # full trees with their routing, for launch.replay_experts
            env["SGLANG_JETSPEC_EXPERT_TRACE"] = expert_trace
    if key == FULL_VOCAB_SERVER:
        env["SGLANG_JETSPEC_DRAFT_VOCAB"] = "off"
    if key == NO_PRIOR_SERVER:
        env["SGLANG_JETSPEC_PAIR_PRIOR"] = "off"
    if key in ONEDNN_SERVERS:
        env["SGLANG_JETSPEC_CPU_LINEAR"] = "onednn"
    return env


def run_suite(plan: BenchPlan, log_dir: Path, progress=print) -> dict:
    from transformers import AutoTokenizer

    from sglang_jetspec.bench.serving import run_serving_sweep
    from sglang_jetspec.integration.server_process import LocalServer
    from sglang_jetspec.reference.prompts import encode_prompts

    tok = AutoTokenizer.from_pretrained(plan.model)
    encoded = {w: encode_prompts(tok, [it.prompt for it in items]) for w, items in plan.workloads.items()}
    results: list[Measurement] = []
    skipped: dict[str, str] = {}
    serving: list[dict] = []
    t_start = time.time()
    servers: dict[str, LocalServer] = {}
    first = next(iter(encoded))  # the first workload: warm-up requests and warm-up passes
    try:
        for key in servers_needed(plan.configs):
            labels = ", ".join(c.label for c in plan.configs if c.server == key)
            progress(f"[bench] starting the {key} server ({labels})")
            server = LocalServer(server_spec(plan, key), log_dir / f"server_{key}.log",
                                 env=server_env(key, plan.expert_trace))
            try:
                server.start().wait_ready()
            except (RuntimeError, TimeoutError) as exc:
                skipped[key] = _startup_reason(str(exc).strip().splitlines())
                progress(f"[bench] {key} server did not start: {skipped[key]}")
                server.stop()
                continue
            servers[key] = server
            # warm-up, not measured: a few full-length requests, so that one-off costs (first
            # shapes, the adaptive width's warm-up ladder over every width) stay out of the numbers
            for ids in encoded[first][:WARMUP_REQUESTS]:
                server.generate(ids, plan.max_new_tokens, temperature=0.0)
        configs = [c for c in plan.configs if c.server in servers]  # plan order: ar first
        bs0 = plan.batch_sizes[0]
        for k in range(plan.warmup_passes):  # the first cell, every configuration, not measured
            progress(f"[bench] warm-up pass {k + 1}/{plan.warmup_passes} (not measured): {first}, batch {bs0}")
            for c in configs:
                measure(servers[c.server], c, first, encoded[first][: max(plan.num_prompts, bs0)], bs0,
                        plan.max_new_tokens)

        def cell(w, name, prompts, bs, phases=None):
            """Every configuration on one (workload, load), `repeats` passes in turn."""
            parts = {c.label: [] for c in configs}
            for rep in range(plan.repeats):
                tag = f" [{rep + 1}/{plan.repeats}]" if plan.repeats > 1 else ""
                for c in configs:
                    m = measure(servers[c.server], c, w, prompts, bs, plan.max_new_tokens, phases=phases)
                    parts[c.label].append(m)
                    progress(f"[bench] {w:14} {name} {c.label:18} {m.tokens_per_s:7.2f} tok/s  "
                             f"accept {m.accept_length:5.2f}  ({m.wall_s:.0f}s){tag}")
            results.extend(merge_repeats(parts[c.label]) for c in configs)

        for w, ids in encoded.items():
            for bs in plan.batch_sizes:
                cell(w, f"bs {bs:3}", ids[: max(plan.num_prompts, bs)], bs)  # enough to fill the batch
            if plan.mixed_load:  # concurrency changing over time: phases back to back
                cell(w, f"mixed {'/'.join(map(str, plan.mixed_load))}",
                     ids[: max(plan.num_prompts, 2 * sum(plan.mixed_load))], 0, plan.mixed_load)
        if plan.serving_rates:
            for key in ("ar", "jetspec", AUTO_SERVER):
                if key in servers:
                    serving += run_serving_sweep(servers[key], key, plan, log_dir, progress)
    finally:
        for server in servers.values():
            server.stop()
    compare_to_ar(results)
    return {
        "schema_version": SCHEMA_VERSION,
        "machine": machine_description(),
        "plan": {"model": _shown(plan.model), "heads": {k: _shown(v) for k, v in plan.heads.items()},
                 "configs": [c.label for c in plan.configs], "workloads": {w: len(v) for w, v in plan.workloads.items()},
                 "batch_sizes": plan.batch_sizes, "mixed_load": plan.mixed_load, "max_new_tokens": plan.max_new_tokens,
                 "num_prompts": plan.num_prompts, "width": plan.width, "depth": plan.depth,
                 "max_total_tokens": plan.max_total_tokens,
                 "standalone_draft": _shown(plan.standalone_draft) if plan.standalone_draft else None,
                 "standalone_steps": plan.standalone_steps if plan.standalone_draft else None,
                 "repeats": plan.repeats, "warmup_passes": plan.warmup_passes},
        "results": [m.to_json() for m in results],
        "skipped": skipped,
        "serving": serving,
        "seconds": time.time() - t_start,
    }


def _shown(path) -> str:
    """A path as the report shows it: relative to the working directory when inside it (a
    report committed to a repository should not name the machine it ran on)."""
    import os

    p = os.path.abspath(str(path))
    rel = os.path.relpath(p)
    return rel if not rel.startswith("..") else p


def _startup_reason(lines: list[str]) -> str:
    """The most telling line of a failed startup log: the last error line, else the first line."""
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln:
            return ln.strip()[:300]
    return (lines[0] if lines else "unknown").strip()[:300]


def machine_description() -> dict:
    import os

    import torch

    try:
        import sglang
        sglang_version = sglang.__version__
    except Exception:  # noqa: BLE001 - only a label
        sglang_version = "unknown"
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "sglang": sglang_version,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=1))
