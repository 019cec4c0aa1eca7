"""The compiled greedy of expert-aware scheduling (core/expert_greedy.cpp through
core/expert_aware_tree.py `_greedy_native`) against the Python loop (`_greedy_python`, the
reference) on random batches: the same addition order and best prefix, hence the same kept nodes,
with and without padding rows, with the EP rank term, patience, loss floors and prices, ties (probabilities
and costs on coarse grids), free nodes (zero cost coefficients) and unused expert slots."""

import random
import shutil

import pytest
import torch

from sglang_jetspec.core import expert_aware_tree as eat
from sglang_jetspec.core import tree_native
from sglang_jetspec.core.expert_load import contiguous_expert_to_rank
from sglang_jetspec.core.tree import build_tree

needs_compiler = pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")),
                                    reason="no C++ compiler here: the Python greedy is what runs")


def _case(seed: int):
    rnd, g = random.Random(seed), torch.Generator().manual_seed(seed)
    L, E, K = rnd.choice([1, 3, 6]), rnd.choice([4, 8, 16]), rnd.choice([1, 2])
    trees, probs, experts = [], [], []
    for _ in range(rnd.randint(1, 5)):
        lp = torch.log_softmax(2 * torch.randn(rnd.randint(1, 6), 20, generator=g), -1)
        t = build_tree(rnd.randrange(20), lp, rnd.randint(1, 24), rnd.randint(1, 4))
        trees.append(t)
        p = torch.rand(t.n - 1, generator=g, dtype=torch.float64)
        probs.append((p * 4).round() / 4 if rnd.random() < 0.4 else p)  # ties
        e = torch.randint(E, (t.n, L, K), generator=g)
        if rnd.random() < 0.3:
            e[torch.rand(t.n, L, K, generator=g) < 0.2] = -1  # unused slots
        experts.append(e)
    ep = rnd.choice([None, 2, 4])
    e2r = None if ep is None or E % ep else contiguous_expert_to_rank(E, ep)
    cost = {"a": rnd.choice([0.0, 1e-3]), "b": rnd.choice([0.0, 1e-5, 1e-4]), "c": rnd.choice([0.0, 1e-4, 2e-4]),
            "d": rnd.choice([0.0, 1e-4]) if e2r is not None else 0.0}
    kw = dict(pad_to_widest=rnd.random() < 0.5, patience=rnd.choice([None, 1, 3, 16]),
              max_expected_loss=rnd.choice([None, 0.0, 0.03, 0.5]))
    if rnd.random() < 0.4 and cost["a"] + cost["b"] + cost["c"] + cost["d"] > 0:  # a price instead of a floor
        kw["max_expected_loss"], kw["price"] = None, rnd.choice([1.0, 30.0, 300.0, 3000.0])
    return trees, probs, experts, cost, e2r, kw


def _orders(case, native: bool):
    trees, probs, experts, cost, e2r, kw = case
    batch = eat._flatten(trees, probs, experts, e2r)
    floor = eat._expected_floor(batch, len(trees), kw["max_expected_loss"])
    args = (batch, eat._coefficients(cost, e2r), *eat._rank_info(e2r), kw["pad_to_widest"], floor, kw["patience"],
            kw.get("price"))
    return eat._greedy_native(tree_native.library(), *args) if native else eat._greedy_python(*args)


@needs_compiler
@pytest.mark.parametrize("seed", range(60))
def test_the_compiled_greedy_makes_the_python_greedys_choices(seed):
    case = _case(seed)
    assert _orders(case, native=True) == _orders(case, native=False)
    trees, probs, experts, cost, e2r, kw = case
    fast = eat.schedule_batch(trees, probs, experts, cost, expert_to_rank=e2r, **kw)
    slow = eat.schedule_batch(trees, probs, experts, cost, expert_to_rank=e2r, native=False, **kw)
    assert all(torch.equal(a, b) for a, b in zip(fast.kept, slow.kept))
    assert fast.expected_tokens == slow.expected_tokens and fast.seconds == slow.seconds


def test_without_the_library_the_python_greedy_schedules(monkeypatch):
    monkeypatch.setattr(tree_native, "_state", {"lib": None})
    trees, probs, experts, cost, e2r, kw = _case(5)
    got = eat.schedule_batch(trees, probs, experts, cost, expert_to_rank=e2r, **kw)
    ref = eat.schedule_batch(trees, probs, experts, cost, expert_to_rank=e2r, native=False, **kw)
    assert all(torch.equal(a, b) for a, b in zip(got.kept, ref.kept))
