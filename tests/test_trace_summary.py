"""bench/trace_summary.py on hand-made traces and on a real torch profiler trace of RoundStats phases."""

import gzip
import json

import pytest
import torch

from sglang_jetspec.bench.trace_summary import format_markdown, load_events, self_times, summarize
from sglang_jetspec.integration.round_stats import RoundStats


def ev(name, ts, dur, tid=1, cat="cpu_op"):
    return {"ph": "X", "name": name, "ts": ts, "dur": dur, "pid": 7, "tid": tid, "cat": cat}


def test_self_time_subtracts_direct_children_only():
    ops = [ev("outer", 0, 100), ev("mid", 10, 50), ev("leaf", 20, 10), ev("later", 70, 20)]
    assert self_times(ops) == [100 - 50 - 20, 50 - 10, 10, 20]


def test_self_time_keeps_threads_apart():
    # the same interval on another thread is not nested inside
    ops = [ev("a", 0, 100, tid=1), ev("b", 10, 50, tid=2)]
    assert self_times(ops) == [100, 50]


def test_summarize_per_occurrence_and_only_inside_the_span():
    events = [
        ev("step[VERIFY bs=1]", 0, 1000, cat="user_annotation"),
        ev("mkldnn::_linear_pointwise", 100, 300), ev("aten::add", 500, 100),
        ev("step[VERIFY bs=1]", 2000, 3000, cat="user_annotation"),
        ev("mkldnn::_linear_pointwise", 2100, 500),
        ev("aten::index", 1500, 200),                  # between the spans: in neither
        ev("aten::mul", 2200, 100, tid=2),             # same time, other thread: not inside
        {"ph": "i", "name": "instant", "ts": 2300},    # not a complete event: ignored
    ]
    (s,) = summarize([e for e in events if e.get("ph") == "X"])
    assert s.name == "step[VERIFY bs=1]" and s.count == 2
    assert s.mean_ms == pytest.approx((1000 + 3000) / 2 / 1e3) == s.median_ms
    assert s.op_ms == pytest.approx({"mkldnn::_linear_pointwise": 0.4, "aten::add": 0.05})
    assert list(s.op_ms) == ["mkldnn::_linear_pointwise", "aten::add"]  # largest first
    assert s.ops_ms == pytest.approx(0.45)
    table = format_markdown("t", [s], top=1)
    assert "`step[VERIFY bs=1]` | 2 | 2.00 | 2.00 | 0.45 | mkldnn::_linear_pointwise 0.40 |" in table
    assert "aten::add" not in table


def test_median_is_not_moved_by_one_slow_occurrence():
    events = [ev("jetspec.verify", t * 100, d, cat="user_annotation") for t, d in enumerate((10, 12, 11, 90))]
    (s,) = summarize(events)
    assert s.median_ms == pytest.approx(0.0115) and s.mean_ms == pytest.approx(0.03075)


def test_load_events_reads_gzip_and_plain(tmp_path):
    events = [ev("x", 0, 5), {"ph": "M", "name": "meta"}, {"ph": "X", "name": "no-dur", "ts": 1}]
    plain, packed = tmp_path / "a.trace.json", tmp_path / "b.trace.json.gz"
    plain.write_text(json.dumps({"traceEvents": events}))
    with gzip.open(packed, "wt") as f:
        json.dump({"traceEvents": events}, f)
    assert load_events(plain) == load_events(packed) == [events[0]]


def test_round_stats_phases_are_named_in_a_real_profile(tmp_path):
    stats = RoundStats("cpu")
    x = torch.randn(64, 64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            with stats.phase("draft"):
                x = x @ x / 64
            with stats.phase("verify"):
                x = torch.tanh(x @ x)
    path = tmp_path / "t.trace.json"
    prof.export_chrome_trace(str(path))
    by_name = {s.name: s for s in summarize(load_events(path))}
    assert set(by_name) == {"jetspec.draft", "jetspec.verify"}
    assert by_name["jetspec.draft"].count == by_name["jetspec.verify"].count == 3
    assert "aten::tanh" in by_name["jetspec.verify"].op_ms
    assert "aten::tanh" not in by_name["jetspec.draft"].op_ms
    assert stats.seconds["draft"] > 0 and stats.seconds["verify"] > 0


def test_gpu_time_counts_in_the_span_that_launched_it():
    def dev(cat, name, ts, dur, corr, pid=0, tid=7):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": pid, "tid": tid,
                "args": {"correlation": corr}}

    events = [
        ev("jetspec.verify", 0, 1000, cat="user_annotation"),
        ev("jetspec.accept", 1000, 200, cat="user_annotation"),
        dev("cuda_runtime", "cudaLaunchKernel", 100, 5, 11, pid=7, tid=1),
        dev("cuda_runtime", "cudaMemcpyAsync", 1100, 5, 12, pid=7, tid=1),
        dev("kernel", "gemm", 1500, 700, 11),           # runs after verify's host span has ended
        dev("gpu_memcpy", "Memcpy DtoH", 2300, 30, 12),
        dev("kernel", "orphan", 3000, 999, 99),         # no launch in the trace: counted nowhere
    ]
    by_name = {s.name: s for s in summarize(events)}
    assert by_name["jetspec.verify"].gpu_ms == pytest.approx(0.7)
    assert by_name["jetspec.accept"].gpu_ms == pytest.approx(0.03)
    assert by_name["jetspec.verify"].op_ms == {}  # runtime calls are not operators
    table = format_markdown("t", list(by_name.values()))
    assert "GPU ms each" in table and "| 0.70 |" in table
    assert "GPU ms" not in format_markdown("t", summarize([ev("step[DECODE bs=1]", 0, 10, cat="user_annotation")]))
