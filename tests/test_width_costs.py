"""The width cost table of the budget policy (core/width_costs.py): measured means, shrunk
toward the model and made non-decreasing in width; unmeasured widths clamped between them."""

import random

import pytest

from sglang_jetspec.core.isotonic import isotonic
from sglang_jetspec.core.width_costs import width_costs


def test_noisy_measured_widths_become_non_decreasing_and_keep_their_weighted_level():
    # the MoE table at batch 1: widths 3, 4, 5 read 54.9, 46.8, 42.4 ms (2-3 rounds each)
    measured = {1: (24.0, 150), 3: (54.9, 2), 4: (46.8, 2), 5: (42.4, 3), 9: (49.3, 25)}
    model = lambda w: 24.0 + 2.5 * w  # noqa: E731
    costs = width_costs(9, measured, model)
    assert all(a <= b + 1e-12 for a, b in zip(costs, costs[1:])), costs
    assert costs[0] == pytest.approx((150 * 24.0 + 2 * 26.5) / 152)
    assert costs[2] == costs[3] == costs[4] < 49.3  # pooled: one level for the violators
    assert costs[8] == pytest.approx((25 * 49.3 + 2 * model(9)) / 27)


def test_unmeasured_widths_take_the_model_clamped_between_measured_neighbours():
    measured = {2: (40.0, 100), 8: (50.0, 100)}
    model = lambda w: 10.0 * w  # noqa: E731  too steep between them, too cheap below
    costs = width_costs(10, measured, model)
    assert costs[0] == 10.0  # below every measured width: the model, capped by width 2's price
    assert costs[1] == pytest.approx((100 * 40.0 + 2 * 20.0) / 102)
    assert costs[2] == pytest.approx(costs[1])  # model 30 < width 2's price: lifted to it
    assert costs[6] == pytest.approx(costs[7])  # model 70 > width 8's price: capped at it
    assert costs[8] == 90.0 and costs[9] == 100.0  # beyond every measured width: the model


def test_few_rounds_lean_on_the_model_many_rounds_on_the_measurement():
    model = lambda w: 58.0  # noqa: E731  the linear model's price of width 64 on the MoE target
    assert width_costs(1, {1: (88.0, 1)}, model)[0] == pytest.approx(68.0)
    assert width_costs(1, {1: (88.0, 40)}, model)[0] == pytest.approx((40 * 88 + 2 * 58) / 42)
    assert width_costs(3, {}, lambda w: w) == [1.0, 2.0, 3.0]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_width 0"):
        width_costs(0, {}, lambda w: 1.0)
    with pytest.raises(ValueError, match="prior_rounds"):
        width_costs(2, {}, lambda w: 1.0, prior_rounds=0)
    with pytest.raises(ValueError, match="one weight per value"):
        isotonic([1.0, 2.0], [1.0])


@pytest.mark.parametrize("seed", range(20))
def test_isotonic_matches_a_brute_force_projection_on_random_inputs(seed):
    """Pool adjacent violators against the plain definition: among non-decreasing sequences
    built from block means of every partition into runs, the weighted least-squares best."""
    rng = random.Random(seed)
    n = rng.randint(1, 7)
    y = [rng.uniform(-1, 1) for _ in range(n)]
    w = [rng.uniform(0.1, 3) for _ in range(n)]
    best, best_err = None, float("inf")
    for cuts in range(2 ** (n - 1)):  # every partition of 0..n-1 into consecutive runs
        fit, start = [], 0
        for i in range(1, n + 1):
            if i == n or cuts >> (i - 1) & 1:
                m = sum(yy * ww for yy, ww in zip(y[start:i], w[start:i])) / sum(w[start:i])
                fit += [m] * (i - start)
                start = i
        if all(a <= b + 1e-12 for a, b in zip(fit, fit[1:])):
            err = sum(ww * (a - b) ** 2 for a, b, ww in zip(fit, y, w))
            if err < best_err:
                best, best_err = fit, err
    assert isotonic(y, w) == pytest.approx(best)
