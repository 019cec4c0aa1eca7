"""Per-round JETSPEC statistics (round_stats.py) and hook 5, which exposes them through SGLang's
internal state (/get_server_info)."""

import time
from types import SimpleNamespace

import pytest

from sglang_jetspec.integration.round_stats import PHASES, RoundStats, stats_delta


def test_rounds_add_up_and_deltas_give_the_means():
    s = RoundStats("cpu")
    before = s.snapshot()
    s.add_round([8, 5], [3, 1], width=8)      # batch of 2, padded to 8 rows each
    s.add_round([8], [5], width=8)
    d = stats_delta(before, s.snapshot())
    assert d["rounds"] == 2 and d["request_rounds"] == 3
    assert d["committed"] == 9 and d["accept_length"] == pytest.approx(3.0)
    assert d["nodes"] == 21 and d["padded_nodes"] == 24
    assert d["nodes_per_request"] == pytest.approx(7.0)
    assert d["batch_size"] == pytest.approx(1.5)
    assert d["accept_hist"][1] == 1 and d["accept_hist"][3] == 1 and d["accept_hist"][5] == 1
    assert sum(d["accept_hist"]) == 3
    # a second window sees only its own rounds
    mid = s.snapshot()
    s.add_round([2], [2], width=2)
    d2 = stats_delta(mid, s.snapshot())
    assert d2["rounds"] == 1 and d2["accept_hist"][2] == 1 and sum(d2["accept_hist"]) == 1


def test_phase_times_accumulate_per_phase_and_per_round():
    s = RoundStats("cpu")
    assert s.timed  # CPU clocks need no device sync
    before = s.snapshot()
    with s.phase("verify"):
        time.sleep(0.02)
    with s.phase("draft"):
        pass
    s.add_round([4], [2], width=4)
    d = stats_delta(before, s.snapshot())
    assert d["seconds"]["verify"] >= 0.02
    assert d["seconds"]["draft"] < d["seconds"]["verify"]
    assert d["ms_per_round"]["verify"] >= 20
    assert set(d["ms_per_round"]) == set(PHASES)
    with pytest.raises(KeyError, match="unknown phase 'sample'"):
        with s.phase("sample"):
            pass


def test_mismatched_round_record_is_an_error():
    with pytest.raises(ValueError, match="2 tree sizes for 1 accept lengths"):
        RoundStats().add_round([3, 3], [1], width=3)


def test_hook_adds_the_workers_counters_to_the_internal_state():
    from sglang_jetspec.integration.hooks import STATE_TARGET, _add_round_stats

    # the patched method exists in the pinned SGLang
    import importlib

    module, cls, meth = STATE_TARGET.rsplit(".", 2)
    assert hasattr(getattr(importlib.import_module(module), cls), meth)

    stats = RoundStats()
    stats.add_round([3], [2], width=3)
    state = {}
    controller = SimpleNamespace(scheduler=SimpleNamespace(draft_worker=SimpleNamespace(stats=stats)))
    assert _add_round_stats(None, controller, state) is None
    assert state["jetspec"]["rounds"] == 1 and state["jetspec"]["accept_hist"][2] == 1
    # other algorithms' workers (no `stats`) and no worker at all: state untouched
    for worker in (SimpleNamespace(), None):
        state = {}
        _add_round_stats(None, SimpleNamespace(scheduler=SimpleNamespace(draft_worker=worker)), state)
        assert state == {}
