"""Budget controller, step-cost model and the best-first prefix property they rely on."""

import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_jetspec.core.acceptance import accept_greedy
from sglang_jetspec.core.budget_controller import (
    BudgetController, RecentAcceptance, choose_shared_width, choose_width, tree_prefix)
from sglang_jetspec.core.calibration import AcceptanceCalibrator
from sglang_jetspec.core.step_cost import StepCostModel
from sglang_jetspec.core.tree import build_tree

FAST = settings(max_examples=60, deadline=None)


def geometric(n: int, first: float, ratio: float) -> torch.Tensor:
    return first * ratio ** torch.arange(n, dtype=torch.float32)  # [n] a chain-like tree


def brute_force(node_probs, cost, max_width):
    """argmax_W of E(W) / cost(bs, W), smallest W on ties, by direct loops."""
    bs, best = len(node_probs), None
    for w in range(1, max_width + 1):
        tokens = sum(1.0 + float(p[: w - 1].sum()) for p in node_probs)
        obj = tokens / cost(bs, w)
        if best is None or obj > best[1] * (1 + 1e-12):
            best = (w, obj, tokens)
    return best


# ---- the prefix property ------------------------------------------------------------------

@FAST
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(2, 20), st.integers(1, 5),
       st.integers(1, 60), st.integers(0, 60), st.booleans())
def test_best_first_tree_of_budget_b_is_a_prefix_of_any_larger_one(seed, depth, vocab, width,
                                                                   small, extra, ties):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, 3, (depth, vocab), generator=g).float() if ties \
        else 3.0 * torch.randn(depth, vocab, generator=g)  # integer logits force score ties
    lp = torch.log_softmax(logits, dim=-1)
    big = build_tree(7, lp, small + extra, width)
    part = build_tree(7, lp, small, width)
    k = min(small, big.n)
    assert part.n == k
    pre = tree_prefix(big, k)
    # the worker's rounds: only the small - 1 depth rows a budget-`small` tree can reach are
    # drafted, a curve probe drafts them all and verifies the prefix; both must be one tree
    rows = max(1, min(depth, small - 1))
    short = build_tree(7, lp[:rows], small, width, rows)
    for name in ("tokens", "parents", "depths", "scores", "ranks"):
        assert torch.equal(getattr(part, name), getattr(pre, name)), name
        assert torch.equal(getattr(short, name), getattr(pre, name)), name
    # and the scores of the larger tree never increase: best-first pop order
    assert bool((big.scores[1:].diff() <= 1e-6).all()) if big.n > 2 else True


# ---- choose_width ---------------------------------------------------------------------------

def test_width_one_when_rows_are_very_expensive():
    probs = [geometric(30, 0.9, 0.9)] * 4
    d = choose_width(probs, lambda bs, w: 1.0 + 1000.0 * bs * (w - 1), max_width=31)
    assert d.width == 1 and d.per_request_budgets == [1] * 4
    assert d.expected_tokens == pytest.approx(4.0) and d.predicted_seconds == pytest.approx(1.0)


def test_max_width_when_rows_are_free():
    probs = [geometric(40, 0.9, 0.95), geometric(10, 0.5, 0.5)]
    d = choose_width(probs, lambda bs, w: 0.02, max_width=32)
    assert d.width == 32 and d.per_request_budgets == [32, 11]  # the short request fills 11
    want = 2 + float(probs[0][:31].sum() + probs[1].sum())
    assert d.expected_tokens == pytest.approx(want, rel=1e-6)


def test_interior_optimum_matches_brute_force():
    probs = [geometric(63, 0.8, 0.8), geometric(63, 0.6, 0.7)]

    def cost(bs, w):
        return 0.010 + 0.0004 * bs * w + 2e-6 * (bs * w) ** 2

    w, obj, tokens = brute_force(probs, cost, 64)
    assert 1 < w < 64  # the example really is interior
    d = choose_width(probs, cost, max_width=64)
    assert (d.width, d.reason) == (w, "optimal")
    assert d.objective == pytest.approx(obj) and d.expected_tokens == pytest.approx(tokens)
    assert max(d.objectives) == pytest.approx(obj) and len(d.objectives) == 64


@FAST
@given(st.integers(0, 10_000), st.integers(1, 8), st.integers(1, 48),
       st.one_of(st.none(), st.integers(0, 400)), st.one_of(st.none(), st.integers(1, 60)))
def test_never_exceeds_max_width_nor_the_kv_bound(seed, bs, max_width, kv_free, pinned):
    rng = random.Random(seed)
    probs = [torch.rand(rng.randrange(0, 60), generator=torch.Generator().manual_seed(seed + r))
             .sort(descending=True).values for r in range(bs)]
    a, c, q = rng.uniform(1e-3, 1e-2), rng.uniform(0, 1e-3), rng.uniform(0, 1e-5)

    def cost(b, w):
        return a + c * b * w + q * (b * w) ** 2

    d = choose_width(probs, cost, max_width, kv_free, pinned, kv_penalty=rng.choice([0.0, 2.0]))
    assert 1 <= d.width <= max_width
    if kv_free is not None:
        assert d.width <= max(1, kv_free // (2 * bs))
    assert d.width == max(d.per_request_budgets)
    assert all(1 <= b <= min(p.numel() + 1, d.width) for b, p in zip(d.per_request_budgets, probs))
    if pinned is None and kv_free is None:  # unconstrained: the brute-force optimum
        fill = max(min(p.numel() + 1, max_width) for p in probs)
        assert d.objective == pytest.approx(brute_force(probs, lambda b, w: cost(b, min(w, fill)),
                                                        max_width)[1])


@FAST
@given(st.integers(0, 10_000), st.integers(1, 16), st.integers(1, 64),
       st.one_of(st.none(), st.integers(0, 2000)), st.booleans())
def test_shared_curve_fast_path_equals_choose_width(seed, bs, max_width, kv_free, flat):
    """The policy's plain-Python path (one curve for every request, a table of step costs)
    decides exactly what choose_width decides on the same inputs."""
    rng = random.Random(seed)
    curve = [rng.random() for _ in range(max_width - 1)]
    if not flat:
        curve.sort(reverse=True)
    a, c = rng.uniform(1e-3, 5e-2), rng.uniform(0, 2e-3)
    costs = [a + c * bs * w * rng.uniform(0.9, 1.1) for w in range(1, max_width + 1)]
    ref = choose_width([torch.tensor(curve, dtype=torch.float64)] * bs,
                       lambda _bs, w: costs[w - 1], max_width, kv_free)
    fast = choose_shared_width(curve, costs, bs, max_width, kv_free)
    assert (fast.width, fast.per_request_budgets, fast.reason, fast.kv_bound) == \
        (ref.width, ref.per_request_budgets, ref.reason, ref.kv_bound)
    assert fast.expected_tokens == pytest.approx(ref.expected_tokens, rel=1e-12)
    assert fast.predicted_seconds == ref.predicted_seconds
    assert fast.objective == pytest.approx(ref.objective, rel=1e-12)
    assert fast.objectives == pytest.approx(ref.objectives, rel=1e-12)


def test_shared_curve_fast_path_rejects_bad_input():
    with pytest.raises(ValueError, match="curve\\[1\\] = 1.5"):
        choose_shared_width([0.5, 1.5], [1.0, 2.0, 3.0], 1, 3)
    with pytest.raises(ValueError, match="must be > 0 seconds"):
        choose_shared_width([0.5, 0.4], [1.0, 0.0, 3.0], 1, 3)
    with pytest.raises(ValueError, match="must cover max_width 4"):
        choose_shared_width([0.5, 0.4], [1.0, 2.0, 3.0], 1, 4)


def test_kv_bound_and_pinned_override():
    probs = [geometric(60, 0.95, 0.97)] * 4
    free = choose_width(probs, lambda bs, w: 1.0, max_width=64)
    assert free.width == 61  # every candidate node (60 + root)
    kv = choose_width(probs, lambda bs, w: 1.0, max_width=64, kv_free_tokens=2 * 4 * 9 + 7)
    assert (kv.width, kv.reason, kv.kv_bound) == (9, "kv_bound", 9)
    starved = choose_width(probs, lambda bs, w: 1.0, max_width=64, kv_free_tokens=3)
    assert starved.width == 1  # the KV bound is 0; plain decoding is the floor
    pinned = choose_width(probs, lambda bs, w: 1.0 + 1000.0 * (w - 1), max_width=64, pinned=5)
    assert (pinned.width, pinned.reason) == (5, "pinned")  # even though width 1 is better
    assert choose_width(probs, lambda bs, w: 1.0, max_width=8, pinned=50).width == 8


def test_batch_size_moves_the_optimum_down_to_plain_decoding():
    """Same drafts, same hardware model: speculation pays at batch 1, not at batch 64."""
    model = StepCostModel(profile=[(bs, bs * w, 0.010 + 0.001 * bs * w)
                                   for bs in (1, 4, 16) for w in (1, 4, 16)])
    one = choose_width([geometric(30, 0.7, 0.7)], model.cost, max_width=32)
    many = choose_width([geometric(30, 0.7, 0.7)] * 64, model.cost, max_width=32)
    assert one.width == 5 and many.width == 1, (one.width, many.width)  # 5: hand-checked optimum


def test_kv_penalty_trades_width_for_free_cache():
    probs = [geometric(60, 0.9, 0.95)] * 8
    cost = lambda bs, w: 0.01 + 1e-5 * bs * w  # noqa: E731
    plain = choose_width(probs, cost, 64, kv_free_tokens=2 * 8 * 64)
    soft = choose_width(probs, cost, 64, kv_free_tokens=2 * 8 * 64, kv_penalty=5.0)
    assert soft.width < plain.width
    assert soft.predicted_seconds == pytest.approx(cost(8, soft.width))


def test_ties_go_to_the_smaller_width():
    d = choose_width([torch.tensor([0.5, 0.0, 0.0])], lambda bs, w: 1.0, max_width=8)
    assert d.width == 2 and d.objectives[1:] == [1.5] * 7  # same value, fewer rows and KV slots


def test_min_node_prob_trims_only_the_tail():
    probs = [torch.tensor([0.9, 0.5, 0.2, 0.001, 0.0005]), torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])]
    d = choose_width(probs, lambda bs, w: 1.0, max_width=6, min_node_prob=0.01)
    assert d.per_request_budgets == [4, 6] and d.width == 6
    assert d.expected_tokens == pytest.approx(2 + 1.6 + 3.5)


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="max_width 0 must be >= 1"):
        choose_width([torch.ones(3)], lambda b, w: 1.0, 0)
    with pytest.raises(ValueError, match=r"node_probs\[0\] must be probabilities"):
        choose_width([torch.tensor([1.5])], lambda b, w: 1.0, 4)
    with pytest.raises(ValueError, match=r"cost\(1, 1\) = 0.0 must be > 0"):
        choose_width([torch.ones(3)], lambda b, w: 0.0, 4)


# ---- step cost model --------------------------------------------------------------------------

def synthetic_steps(a, b, c, q, n, seed, noise=0.03):
    rng = random.Random(seed)
    for _ in range(n):
        bs, w = rng.randint(1, 64), rng.randint(1, 64)
        t = a + b * bs + c * bs * w + q * (bs * w) ** 2
        yield bs, bs * w, t * (1 + rng.gauss(0, noise))


def test_cost_model_recovers_coefficients_from_noisy_steps():
    a, b, c = 0.005, 0.0002, 3e-5
    model = StepCostModel(half_life=None)
    for bs, rows, t in synthetic_steps(a, b, c, 0.0, 1500, seed=0):
        model.observe(bs, rows, t)
    k = model.coefficients
    assert k["a"] == pytest.approx(a, rel=0.1) and k["b"] == pytest.approx(b, rel=0.1)
    assert k["c"] == pytest.approx(c, rel=0.05) and k["q"] == 0.0


def test_quadratic_cost_model_and_non_negativity():
    quad = StepCostModel(quadratic=True, half_life=None)
    for bs, rows, t in synthetic_steps(0.004, 0.0, 1e-5, 2e-9, 1500, seed=1, noise=0.01):
        quad.observe(bs, rows, t)
    k = quad.coefficients
    assert k["q"] == pytest.approx(2e-9, rel=0.05) and k["c"] == pytest.approx(1e-5, rel=0.1)
    neg = StepCostModel(half_life=None)  # true per-request term is negative: clamp it to 0
    for bs, rows, t in synthetic_steps(0.02, -0.0002, 2e-5, 0.0, 500, seed=2, noise=0.0):
        neg.observe(bs, rows, t)
    k = neg.coefficients
    assert k["b"] == 0.0 and min(k.values()) >= 0.0 and k["a"] > 0 and k["c"] > 0


def test_cost_model_prior_before_data_and_forgetting():
    profile = [(w, 0.01 + 0.0005 * w) for w in (1, 8, 32, 128)]  # (rows, seconds) at bs 1
    model = StepCostModel(profile=profile, half_life=50)
    assert model.predict(1, 64) == pytest.approx(0.01 + 0.0005 * 64, rel=0.02)
    for _ in range(400):  # the hardware got twice as slow per row
        for w in (1, 16, 64):
            model.observe(1, w, 0.01 + 0.001 * w)
    assert model.predict(1, 64) == pytest.approx(0.01 + 0.001 * 64, rel=0.04)
    assert model.cost(2, 8) == model.predict(2, 16)
    json.dumps(model.state_dict())
    with pytest.raises(ValueError, match="seconds -1.0 must be a finite positive"):
        model.observe(1, 1, -1.0)
    with pytest.raises(ValueError, match="rows 1 >= bs"):
        model.observe(4, 1, 0.1)


# ---- acceptance tracker and the wired controller -----------------------------------------

def test_recent_acceptance_ema_and_ratio():
    ra = RecentAcceptance(alpha=0.2)
    assert ra.ratio is None
    for _ in range(60):
        ra.observe([3, 5], expected_tokens=8.0)  # mean 4 per request, expected 4
    assert ra.length == pytest.approx(4.0) and ra.ratio == pytest.approx(1.0)
    for _ in range(60):
        ra.observe([1, 1], expected_tokens=8.0)
    assert ra.length == pytest.approx(1.0, abs=1e-3) and ra.ratio == pytest.approx(0.25, abs=1e-3)


def test_controller_loop_learns_and_decides_within_bounds():
    """Rounds of greedy verification against a fixed 'target': the controller's prefixes are
    real build_tree outputs, the calibrator gets data, and the acceptance EMA tracks reality."""
    vocab, max_width = 16, 32
    model = StepCostModel()
    ctrl = BudgetController(max_width, model, AcceptanceCalibrator(half_life=20))
    g = torch.Generator().manual_seed(0)
    for rnd in range(30):
        lps = [torch.log_softmax(3.0 * torch.randn(6, vocab, generator=g), -1) for _ in range(3)]
        cands = [build_tree(1, lp, max_width, 4) for lp in lps]
        d = ctrl.decide(cands, kv_free_tokens=2 * 3 * 20)
        assert 1 <= d.width <= 20
        paths, bonus = [], []
        for lp, cand, b in zip(lps, cands, d.per_request_budgets):
            tree = tree_prefix(cand, b)
            assert torch.equal(tree.tokens, build_tree(1, lp, b, 4).tokens)
            logits = torch.zeros(tree.n, vocab)  # target = draft argmax of the next depth
            logits[torch.arange(tree.n), lp.argmax(-1)[tree.depths.clamp(max=5)]] = 1.0
            res = accept_greedy(tree, logits)
            paths.append(res.accepted_nodes)
            bonus.append(res.bonus_token)
        ctrl.observe(cands, d, paths, bonus, seconds=0.01 + 2e-5 * 3 * d.width)
    assert ctrl.calibrator.updates == 30 and model.observations == 30
    assert ctrl.acceptance.length > 2.0  # the target agrees with the draft's trunk
    assert ctrl.calibrator.expected_error() < ctrl.calibrator.expected_error(of="draft")


def test_a_few_small_width_steps_overrule_the_placeholder_prior():
    """Seen on a CPU: rows cost 5 ms, not the placeholder's 20 us. Ten exact observations at
    widths 1..16 must give that slope (a prior with leverage at large widths did not)."""
    from sglang_jetspec.core.step_cost import StepCostModel

    m = StepCostModel()
    for _ in range(2):
        for w in (1, 2, 4, 8, 16):
            m.observe(2, 2 * w, 0.01 + 0.01 * w)
    k = m.coefficients
    assert k["c"] == pytest.approx(0.005, rel=0.01) and m.predict(2, 2) == pytest.approx(0.02, rel=0.01)


def test_the_cost_table_of_every_width_equals_one_prediction_per_width():
    g = torch.Generator().manual_seed(3)
    for quadratic in (False, True):
        m = StepCostModel(quadratic=quadratic, draft_depth=15)
        for _ in range(40):
            bs, w = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(1, 33, (1,), generator=g))
            m.observe(bs, bs * w, 0.01 + 0.002 * bs + 0.0005 * bs * w + 0.01 * float(torch.rand(1, generator=g)))
        for bs in (1, 3, 16):
            assert m.costs(bs, 40) == pytest.approx([m.cost(bs, w) for w in range(1, 41)], rel=1e-12)
    with pytest.raises(ValueError, match="max_width 0"):
        m.costs(1, 0)
