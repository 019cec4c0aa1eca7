"""core/held_price.py: the price a held bound sets, and the reference rates per width bucket."""

import pytest

from sglang_jetspec.core.held_price import PRICE_AT_TARGET, REF_WEIGHT, ReferenceRates, price_of


def test_the_price_scales_with_the_bound_over_the_target_and_the_reference():
    assert price_of(0.03, 0.03, 100.0) == pytest.approx(PRICE_AT_TARGET * 100.0)
    assert price_of(0.06, 0.03, 100.0) == pytest.approx(2 * price_of(0.03, 0.03, 100.0))
    for bad in [(0.0, 0.03, 1.0), (0.03, 0.03, 0.0), (0.03, 0.03, float("inf")), (0.03, -1.0, 1.0)]:
        with pytest.raises(ValueError, match="must be positive"):
            price_of(*bad)


def test_reference_rates_are_running_means_per_width_bucket_and_skip_unpriced_rounds():
    rates = ReferenceRates()
    assert rates.get(40) is None
    assert rates.update(40, 8.0, 0.0) is None and rates.get(40) is None  # the cost model prices nothing yet
    assert rates.update(40, 8.0, 0.1) == pytest.approx(80.0)  # the first priced round starts it
    assert rates.update(63, 4.0, 0.1) == pytest.approx(80.0 + REF_WEIGHT * (40.0 - 80.0))  # same bucket (64)
    assert rates.update(9, 2.0, 0.1) == pytest.approx(20.0) and rates.get(16) == pytest.approx(20.0)
    assert set(rates.by_width) == {16, 64}
    with pytest.raises(ValueError, match="reference weight 0 must be in"):
        ReferenceRates(0)


def test_stop_at_starts_a_width_from_its_own_trees_then_prices_on_earlier_rounds():
    from types import SimpleNamespace

    rates, calls = ReferenceRates(), []

    def whole():
        calls.append(1)
        return 6.0, 0.02  # 300 tokens a second

    assert rates.stop_at(40, 0.03, 0.03, lambda: (6.0, 0.0)) == {"max_expected_loss": 0.03}  # unpriced model
    rates.after(40, SimpleNamespace(full_expected=6.0, full_seconds=0.0))
    assert rates.get(40) is None
    assert rates.stop_at(40, 0.03, 0.03, whole) == {"price": pytest.approx(PRICE_AT_TARGET * 300.0)}
    rates.after(40, SimpleNamespace(full_expected=6.0, full_seconds=0.02))  # the same trees: not twice
    assert rates.get(40) == pytest.approx(300.0) and len(calls) == 1
    assert rates.stop_at(40, 0.06, 0.03, whole) == {"price": pytest.approx(2 * PRICE_AT_TARGET * 300.0)}
    rates.after(40, SimpleNamespace(full_expected=2.0, full_seconds=0.02))  # a later round folds in
    assert rates.get(40) == pytest.approx(300.0 + REF_WEIGHT * (100.0 - 300.0)) and len(calls) == 1
