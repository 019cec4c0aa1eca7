"""Where a scheduler step's time goes, from a torch profiler trace of a real SGLang server.

SGLang's `/start_profile` (activities CPU, optionally GPU) writes a Chrome trace of the scheduler
process. Its scheduler loop marks `scheduler.run_batch` (the whole forward step: batch
preparation, the model or speculative worker, sampling) and `scheduler.process_batch_result`
(committing tokens, streaming); the model forward inside it is `step[DECODE bs=1]`,
`step[VERIFY bs=4]`, ...; the JETSPEC
worker names its four phases `jetspec.draft`, `jetspec.tree`, `jetspec.verify`, `jetspec.accept`
(integration/round_stats.py). This module groups the trace's complete events under those spans and
sums the SELF time of every operator inside each (an op's own time minus the ops it calls, so
nothing is counted twice), per occurrence of the span. Pure python: no torch, no SGLang.
"""

from __future__ import annotations

import gzip
import json
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")   # device activity of a Kineto trace
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")       # the host calls that enqueued it
SPAN_PREFIXES = ("scheduler.run_batch", "scheduler.process_batch_result", "step[", "jetspec.")


def load_events(path: str | Path) -> list[dict]:
    """The complete ("ph": "X") events of a Chrome trace file (.json or .json.gz)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e and "ts" in e]


def self_times(ops: list[dict]) -> list[float]:
    """Self time (us) of each op, in the order given: its duration minus that of the ops nested
    directly inside it on the same thread."""
    out = [float(e["dur"]) for e in ops]
    by_thread = defaultdict(list)
    for i, e in enumerate(ops):
        by_thread[(e.get("pid"), e.get("tid"))].append(i)
    for idx in by_thread.values():
        idx.sort(key=lambda i: (ops[i]["ts"], -ops[i]["dur"]))
        stack: list[int] = []
        for i in idx:
            e = ops[i]
            while stack and ops[stack[-1]]["ts"] + ops[stack[-1]]["dur"] <= e["ts"]:
                stack.pop()
            if stack:
                out[stack[-1]] -= e["dur"]
            stack.append(i)
    return out


@dataclass
class SpanSummary:
    name: str                   # e.g. "step[VERIFY bs=1]" or "jetspec.draft"
    count: int                  # occurrences in the trace
    mean_ms: float              # wall time per occurrence
    median_ms: float            # its median (one slow occurrence, e.g. a prefill's, moves the mean)
    op_ms: dict[str, float] = field(default_factory=dict)  # op -> self ms per occurrence, largest first
    gpu_ms: float = 0.0         # device time per occurrence of the kernels/copies it launched

    @property
    def ops_ms(self) -> float:
        return sum(self.op_ms.values())


def launches(events: list[dict]) -> list[tuple[tuple, float, float]]:
    """(host thread, launch time, device us) of every GPU kernel, copy or set in the trace: a
    device event is matched to the runtime/driver call that enqueued it by their shared
    ``args["correlation"]``; device events without a matching launch are left out."""
    launch_at = {}
    for e in events:
        corr = (e.get("args") or {}).get("correlation")
        if e.get("cat") in LAUNCH_CATEGORIES and corr is not None:
            launch_at[corr] = ((e.get("pid"), e.get("tid")), e["ts"])
    out = []
    for e in events:
        corr = (e.get("args") or {}).get("correlation")
        if e.get("cat") in GPU_CATEGORIES and corr in launch_at:
            thread, ts = launch_at[corr]
            out.append((thread, ts, float(e["dur"])))
    return out


def _start(entry: tuple) -> float:
    return entry[0]


def summarize(events: list[dict], prefixes: tuple[str, ...] = SPAN_PREFIXES) -> list[SpanSummary]:
    """One SpanSummary per distinct span name (names starting with one of `prefixes`), sorted by
    name. An op belongs to a span when it lies wholly inside it on the same thread; a GPU kernel
    belongs to the spans its launch call lies in (kernels run later, on their own streams)."""
    spans = [e for e in events if str(e.get("name", "")).startswith(prefixes)]
    ops = [e for e in events if e.get("cat") == "cpu_op"]
    own = self_times(ops)
    by_thread = defaultdict(list)
    for e, t in zip(ops, own):
        by_thread[(e.get("pid"), e.get("tid"))].append((e["ts"], e["ts"] + e["dur"], e["name"], t))
    for lst in by_thread.values():
        lst.sort()
    device = defaultdict(list)
    for thread, ts, dur in launches(events):
        device[thread].append((ts, dur))
    for lst in device.values():
        lst.sort()
    occurrences = defaultdict(list)
    for sp in spans:
        occurrences[sp["name"]].append(sp)
    out = []
    for name in sorted(occurrences):
        occ = occurrences[name]
        per_op: Counter = Counter()
        gpu = 0.0
        for sp in occ:
            start, end = sp["ts"], sp["ts"] + sp["dur"]
            thread = (sp.get("pid"), sp.get("tid"))
            # both lists are sorted by start time: a span reads only what starts inside it
            ops_of, dev = by_thread.get(thread, []), device.get(thread, [])
            first, last = bisect_left(ops_of, start, key=_start), bisect_right(ops_of, end, key=_start)
            for (_, o_end, op, t) in ops_of[first:last]:
                if o_end <= end:
                    per_op[op] += t
            first, last = bisect_left(dev, start, key=_start), bisect_right(dev, end, key=_start)
            gpu += sum(d for _, d in dev[first:last])
        n = len(occ)
        durs = sorted(s["dur"] for s in occ)
        median = (durs[(n - 1) // 2] + durs[n // 2]) / 2
        out.append(SpanSummary(name, n, sum(durs) / n / 1e3, median / 1e3,
                               {op: t / n / 1e3 for op, t in per_op.most_common()}, gpu / n / 1e3))
    return out


def format_markdown(title: str, summaries: list[SpanSummary], top: int = 8) -> str:
    """A table per span: wall ms per occurrence (mean and median), op self ms, GPU ms (only when
    the trace has device events), and its `top` ops."""
    lines = [f"### {title}", ""]
    if not summaries:
        return "\n".join(lines + ["(no step or jetspec spans in the trace)", ""])
    gpu = any(s.gpu_ms > 0 for s in summaries)
    lines += ["| span | count | ms each | median ms | ops' self ms each | " + ("GPU ms each | " if gpu else "")
              + "largest ops (self ms each) |", "|---|---:|---:|---:|---:|" + ("---:|" if gpu else "") + "---|"]
    for s in summaries:
        ops = ", ".join(f"{op} {ms:.2f}" for op, ms in list(s.op_ms.items())[:top])
        dev = f"{s.gpu_ms:.2f} | " if gpu else ""
        lines.append(f"| `{s.name}` | {s.count} | {s.mean_ms:.2f} | {s.median_ms:.2f} | {s.ops_ms:.2f} | {dev}{ops} |")
    return "\n".join(lines + [""])
