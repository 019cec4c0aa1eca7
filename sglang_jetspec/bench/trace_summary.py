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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

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

    @property
    def ops_ms(self) -> float:
        return sum(self.op_ms.values())


def summarize(events: list[dict], prefixes: tuple[str, ...] = SPAN_PREFIXES) -> list[SpanSummary]:
    """One SpanSummary per distinct span name (names starting with one of `prefixes`), sorted by
    name. An op belongs to a span when it lies wholly inside it on the same thread."""
    spans = [e for e in events if str(e.get("name", "")).startswith(prefixes)]
    ops = [e for e in events if e.get("cat") == "cpu_op"]
    own = self_times(ops)
    by_thread = defaultdict(list)
    for e, t in zip(ops, own):
        by_thread[(e.get("pid"), e.get("tid"))].append((e["ts"], e["ts"] + e["dur"], e["name"], t))
    for lst in by_thread.values():
        lst.sort()
    out = []
    for name in sorted({s["name"] for s in spans}):
        occ = [s for s in spans if s["name"] == name]
        per_op: Counter = Counter()
        for s in occ:
            start, end = s["ts"], s["ts"] + s["dur"]
            for (o_start, o_end, op, t) in by_thread.get((s.get("pid"), s.get("tid")), []):
                if o_start >= start and o_end <= end:
                    per_op[op] += t
        n = len(occ)
        durs = sorted(s["dur"] for s in occ)
        median = (durs[(n - 1) // 2] + durs[n // 2]) / 2
        out.append(SpanSummary(name, n, sum(durs) / n / 1e3, median / 1e3,
                               {op: t / n / 1e3 for op, t in per_op.most_common()}))
    return out


def format_markdown(title: str, summaries: list[SpanSummary], top: int = 8) -> str:
    """A table per span: wall ms per occurrence (mean and median), op self ms, and its `top` ops."""
    lines = [f"### {title}", ""]
    if not summaries:
        return "\n".join(lines + ["(no step or jetspec spans in the trace)", ""])
    lines += ["| span | count | ms each | median ms | ops' self ms each | largest ops (self ms each) |",
              "|---|---:|---:|---:|---:|---|"]
    for s in summaries:
        ops = ", ".join(f"{op} {ms:.2f}" for op, ms in list(s.op_ms.items())[:top])
        lines.append(f"| `{s.name}` | {s.count} | {s.mean_ms:.2f} | {s.median_ms:.2f} | {s.ops_ms:.2f} | {ops} |")
    return "\n".join(lines + [""])
