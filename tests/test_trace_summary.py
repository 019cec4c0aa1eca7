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


def _summarize_by_scan(events, prefixes=("step[", "jetspec.")):
    """The plain quadratic reading summarize's bisect must agree with: every op and launch of the
    span's thread tested against every occurrence of the span."""
    from sglang_jetspec.bench.trace_summary import launches

    spans = [e for e in events if str(e.get("name", "")).startswith(prefixes)]
    ops = [e for e in events if e.get("cat") == "cpu_op"]
    own = self_times(ops)
    out = {}
    for name in sorted({s["name"] for s in spans}):
        occ = [s for s in spans if s["name"] == name]
        per_op, gpu = {}, 0.0
        for s in occ:
            start, end, th = s["ts"], s["ts"] + s["dur"], (s["pid"], s["tid"])
            for o, t in zip(ops, own):
                if (o["pid"], o["tid"]) == th and o["ts"] >= start and o["ts"] + o["dur"] <= end:
                    per_op[o["name"]] = per_op.get(o["name"], 0.0) + t
            gpu += sum(d for thr, ts, d in launches(events) if thr == th and start <= ts <= end)
        out[name] = ({op: t / len(occ) / 1e3 for op, t in per_op.items()}, gpu / len(occ) / 1e3)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_summarize_agrees_with_a_plain_scan_on_random_traces(seed):
    import random

    rng = random.Random(seed)
    events, corr = [], 0
    for tid in (1, 2):
        t = 0
        for _ in range(30):  # spans one after another (some touching), ops nested or straddling
            dur = rng.randint(50, 400)
            name = rng.choice(["step[DECODE bs=1]", "jetspec.draft", "jetspec.verify"])
            events.append(ev(name, t, dur, tid=tid, cat="user_annotation"))
            for _ in range(rng.randint(0, 6)):
                o_start = t + rng.randint(-30, dur)
                o_dur = rng.randint(1, 120)
                events.append(ev(rng.choice(["aten::mm", "aten::add", "aten::cat"]), o_start, o_dur, tid=tid))
                if rng.random() < 0.4:  # a launch call and the kernel it enqueued
                    corr += 1
                    events.append({**ev("cudaLaunchKernel", o_start, 2, tid=tid, cat="cuda_runtime"),
                                   "args": {"correlation": corr}})
                    events.append({**ev("kernel", o_start + 50, rng.randint(1, 80), tid=99, cat="kernel"),
                                   "args": {"correlation": corr}})
            t += dur + rng.choice([0, 0, 5, 40])
    want = _summarize_by_scan(events)
    got = summarize(events)
    assert sorted(s.name for s in got) == sorted(want)
    for s in got:
        ops, gpu = want[s.name]
        assert s.op_ms == pytest.approx(ops) and s.gpu_ms == pytest.approx(gpu)
