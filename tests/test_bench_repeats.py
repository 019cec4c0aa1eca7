"""launch.bench --repeats: a configuration's interleaved repeats merge into one measurement."""

import pytest

from sglang_jetspec.bench.runner import Measurement, compare_to_ar, merge_repeats, policy_view


def _m(label, tokens, wall, rounds, accept, outputs, method="jetspec", **kw):
    return Measurement(label=label, method=method, budget=None, workload="code", batch_size=1,
                       requests=len(outputs), output_tokens=tokens, wall_s=wall, tokens_per_s=tokens / wall,
                       verify_rounds=rounds, accept_length=accept, outputs=outputs, **kw)


def test_repeats_sum_tokens_and_time_and_weight_rates_by_rounds():
    a = _m("jetspec@auto", 100, 10.0, 40, 2.5, [[1, 2]], accept_hist=[0, 1, 3], nodes_per_request=4.0,
           server_rounds=40, ms_per_round={"draft": 10.0, "verify": 20.0}, widths={"1": 3, "8": 37, "probes": 2},
           retracted=0, prefill_tokens=10, cached_tokens=0)
    b = _m("jetspec@auto", 60, 2.0, 10, 1.0, [[3]], accept_hist=[0, 2, 0], nodes_per_request=2.0,
           server_rounds=10, ms_per_round={"draft": 20.0, "verify": 40.0}, widths={"1": 10, "probes": 1},
           retracted=1, prefill_tokens=5, cached_tokens=2)
    m = merge_repeats([a, b])
    assert m.tokens_per_s == pytest.approx(160 / 12.0)  # not the mean of 10 and 30 tok/s
    assert m.requests == 2 and m.outputs == [[1, 2], [3]] and m.repeats == 2
    assert m.accept_length == pytest.approx((2.5 * 40 + 1.0 * 10) / 50)
    assert m.nodes_per_request == pytest.approx((4.0 * 40 + 2.0 * 10) / 50)
    assert m.ms_per_round == pytest.approx({"draft": 12.0, "verify": 24.0})
    assert m.accept_hist == [0, 3, 3] and m.widths == {"1": 13, "8": 37, "probes": 3}
    assert (m.retracted, m.prefill_tokens, m.cached_tokens) == (1, 15, 2)
    assert merge_repeats([a]) is a


def test_policy_view_is_kept_for_adaptive_widths_only():
    snap = {"mode": "adaptive", "measured_ms": {"1x8": [40.0, 12]}, "expected_tokens_curve": [1.0, 1.6],
            "bias_ratio": 0.9, "own_ms_per_round": 0.4, "width_hist": {"8": 12}}
    assert policy_view(snap) == {"measured_ms": {"1x8": [40.0, 12]}, "expected_tokens_curve": [1.0, 1.6],
                                 "bias_ratio": 0.9, "own_ms_per_round": 0.4}
    assert policy_view({"mode": "static", "width_hist": {"8": 3}}) is None and policy_view(None) is None
    a = _m("jetspec@auto", 10, 1.0, 4, 2.0, [[1]])
    b = _m("jetspec@auto", 10, 1.0, 4, 2.0, [[2]])
    a.policy, b.policy = {"bias_ratio": 1.0}, {"bias_ratio": 0.8}
    assert merge_repeats([a, b]).policy == {"bias_ratio": 0.8}  # the view after the last repeat


def test_merged_repeats_compare_with_ars_repeats_one_to_one():
    ar = merge_repeats([_m("ar", 10, 1.0, 0, 1.0, [[1, 2]], "ar"), _m("ar", 10, 1.0, 0, 1.0, [[3]], "ar")])
    js = merge_repeats([_m("jetspec@8", 10, 0.5, 4, 2.0, [[1, 2]]), _m("jetspec@8", 10, 0.5, 4, 2.0, [[4]])])
    compare_to_ar([ar, js])
    assert js.speedup == pytest.approx(2.0) and js.matches_ar == 1 and ar.matches_ar == 2


def test_repeats_of_different_cells_are_refused():
    a = _m("jetspec@8", 1, 1.0, 1, 1.0, [[1]])
    with pytest.raises(ValueError, match="one configuration"):
        merge_repeats([a, _m("jetspec@16", 1, 1.0, 1, 1.0, [[1]])])
    with pytest.raises(ValueError, match="at least one"):
        merge_repeats([])
