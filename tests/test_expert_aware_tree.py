"""Expert-aware tree scheduling: pruning keeps valid, lossless-compatible trees; greedy is within a
few percent of exhaustive search on random small cases; it prefers nodes that reuse experts."""

import pytest
import torch

from sglang_jetspec.core import expert_aware_tree as eat
from sglang_jetspec.core.acceptance import accept_greedy
from sglang_jetspec.core.expert_load import contiguous_expert_to_rank, expert_union_counts
from sglang_jetspec.core.tree import DraftTree, build_tree
from sglang_jetspec.core.verify_layout import to_verify_layout


L, E, K, V = 3, 8, 2, 12


def _case(g, n, table=None):
    """A best-first tree of n nodes, its draft probabilities (consistent: a child never above its
    parent, siblings never above it together) and token-dependent predicted experts."""
    logprobs = (torch.randn(4, V, generator=g) * 2).log_softmax(-1)
    tree = build_tree(int(torch.randint(V, (1,), generator=g)), logprobs, n, 3)
    if table is None:
        table = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(V * L)]).view(V, L, K)
    return tree, tree.scores[1:].exp().double(), table[tree.tokens]


def _cost(g):
    return {"a": 0.05 + 0.5 * float(torch.rand(1, generator=g)), "b": 0.01,
            "c": 0.05 * float(torch.rand(1, generator=g))}


def _tree(tokens, parents, ranks):
    depths = [0]
    for p in parents[1:]:
        depths.append(depths[p] + 1)
    return DraftTree(torch.tensor(tokens), torch.tensor(parents), torch.tensor(depths),
                     -0.1 * torch.tensor(depths, dtype=torch.float32), torch.tensor(ranks))


def test_prune_tree_reindexes_parents_and_sibling_ranks():
    #        0
    #    1   2   3        drop 1: node 2 becomes rank 0, node 3 rank 1
    #   4 5      6        drop 5
    t = _tree([10, 11, 12, 13, 14, 15, 16], [-1, 0, 0, 0, 1, 1, 3], [0, 0, 1, 2, 0, 1, 0])
    t.validate()
    p = eat.prune_tree(t, torch.tensor([True, False, True, True, False, False, True]))
    p.validate()
    assert p.tokens.tolist() == [10, 12, 13, 16]
    assert p.parents.tolist() == [-1, 0, 0, 2]
    assert p.ranks.tolist() == [0, 0, 1, 0]
    assert p.depths.tolist() == [0, 1, 1, 2]
    assert torch.equal(p.scores, t.scores[[0, 2, 3, 6]])
    with pytest.raises(ValueError, match="node 4 is kept but its parent 1 is not"):
        eat.prune_tree(t, torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match="root"):
        eat.prune_tree(t, torch.tensor([1, 4]))


def test_closed_subsets_are_exactly_the_ancestor_closed_sets():
    t = _tree([1, 2, 3, 4], [-1, 0, 1, 0], [0, 0, 0, 1])  # a chain 0-1-2 and a leaf 3
    sets = {tuple(s.nonzero().squeeze(1).tolist()) for s in eat.closed_subsets(t)}
    assert sets == {(0,), (0, 1), (0, 3), (0, 1, 2), (0, 1, 3), (0, 1, 2, 3)}


@pytest.mark.parametrize("variant", ["plain", "expert_parallel", "expected_loss_bound"])
def test_greedy_is_within_a_few_percent_of_exhaustive_on_single_trees(variant):
    g = torch.Generator().manual_seed(0)
    e2r = contiguous_expert_to_rank(E, 4)
    gaps = []
    for _ in range(50):
        tree, probs, experts = _case(g, int(torch.randint(3, 11, (1,), generator=g)))
        cost, kw = _cost(g), {}
        if variant == "expert_parallel":
            cost["d"], kw = 0.05 * float(torch.rand(1, generator=g)), {"expert_to_rank": e2r}
        elif variant == "expected_loss_bound":
            kw = {"max_expected_loss": 0.05}
        greedy = eat.schedule_tree(tree, probs, experts, cost, **kw)
        best = eat.exhaustive_schedule([tree], [probs], [experts], cost, **kw)
        assert greedy.tokens_per_second <= best.tokens_per_second * (1 + 1e-9)
        if variant == "expected_loss_bound":
            assert greedy.expected_tokens >= 0.95 * (1 + float(probs.sum())) - 1e-9
            assert best.expected_tokens >= 0.95 * (1 + float(probs.sum())) - 1e-9
        gaps.append(1 - greedy.tokens_per_second / best.tokens_per_second)
    gaps = torch.tensor(gaps)
    print(f"single trees, {variant}: greedy gap max {gaps.max():.4f} mean {gaps.mean():.5f}")
    # the bound makes it a knapsack-like problem where ratio order is only a heuristic: measured
    # gaps of up to 9% in 5 of 150 cases (mean 0.1%); the plain and EP objectives measured 0
    worst, mean = (0.1, 0.01) if variant == "expected_loss_bound" else (0.03, 0.005)
    assert float(gaps.max()) < worst and float(gaps.mean()) < mean


def test_greedy_batch_is_within_a_few_percent_of_exhaustive():
    g = torch.Generator().manual_seed(1)
    gaps = []
    for i in range(50):
        cases = [_case(g, int(torch.randint(2, 6, (1,), generator=g))) for _ in range(2)]
        args = [[c[j] for c in cases] for j in range(3)] + [_cost(g)]
        pad = i % 2 == 0
        greedy = eat.schedule_batch(*args, pad_to_widest=pad)
        best = eat.exhaustive_schedule(*args, pad_to_widest=pad)
        assert greedy.tokens_per_second <= best.tokens_per_second * (1 + 1e-9)
        gaps.append(1 - greedy.tokens_per_second / best.tokens_per_second)
    gaps = torch.tensor(gaps)
    print(f"batches of 2: greedy gap max {gaps.max():.4f} mean {gaps.mean():.5f}")
    assert float(gaps.max()) < 0.05 and float(gaps.mean()) < 0.01


def test_exhaustive_scores_match_the_scalar_objective():
    # the vectorised enumeration must agree with schedule_value on every subset it considered
    g = torch.Generator().manual_seed(2)
    e2r = contiguous_expert_to_rank(E, 2)
    cost = {"a": 0.1, "b": 0.01, "c": 0.02, "d": 0.03}
    for _ in range(5):
        tree, probs, experts = _case(g, 6)
        best = eat.exhaustive_schedule([tree], [probs], [experts], cost, expert_to_rank=e2r)
        for s in eat.closed_subsets(tree):
            e, sec = eat.schedule_value([tree], [probs], [experts], [s], cost, expert_to_rank=e2r)
            assert e / sec <= best.tokens_per_second * (1 + 1e-9)
        assert best.expected_tokens == pytest.approx(1 + float(probs[best.kept[0][1:] - 1].sum()))


def test_pruned_trees_verify_losslessly():
    """Greedy acceptance on the pruned tree == the walk through the kept nodes of the candidate
    tree, for a target whose next token depends on the whole path; the layout accepts the trees."""
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        cases = [_case(g, int(torch.randint(4, 16, (1,), generator=g))) for _ in range(3)]
        sched = eat.schedule_batch(*[[c[j] for c in cases] for j in range(3)],
                                   {"a": 0.05, "b": 0.01, "c": 0.03})
        for (tree, _, _), pruned, kept in zip(cases, sched.trees, sched.kept):
            pruned.validate()
            assert kept[0] == 0 and bool((kept[1:] > kept[:-1]).all())
            assert torch.equal(pruned.tokens, tree.tokens[kept])
            for i in range(pruned.n):  # every kept node keeps its exact path of tokens
                assert pruned.tokens[pruned.path_to(i)].tolist() == tree.tokens[tree.path_to(int(kept[i]))].tolist()
            salt = int(torch.randint(1000, (1,), generator=g))
            pick = lambda path: hash((salt, *path)) % 3  # noqa: E731  (tokens 0..2: many accepts)
            logits = torch.zeros(pruned.n, V)
            for i in range(pruned.n):
                logits[i, pick(tuple(pruned.tokens[pruned.path_to(i)].tolist()))] = 1.0
            got = accept_greedy(pruned, logits)
            # reference walk on the candidate tree restricted to the kept nodes
            kids, toks, keep = tree.children(), tree.tokens.tolist(), set(kept.tolist())
            node, path = 0, [toks[0]]
            while True:
                y = pick(tuple(path))
                nxt = [c for c in kids[node] if c in keep and toks[c] == y]
                if not nxt:
                    break
                node = nxt[0]
                path.append(y)
            assert got.tokens == path[1:] + [y]
        layout = to_verify_layout(sched.trees, [5, 6, 7], n=max(t.n for t in sched.trees))
        assert layout.draft_tokens.numel() == 3 * max(t.n for t in sched.trees)


def test_prefers_branches_that_reuse_experts_and_cuts_expert_reads():
    # root and branch A route to experts {0, 1} in every layer; branch B to {6, 7}. Equal probs.
    #        0
    #    1(A)  2(B)
    #    3(A)  4(B)
    t = _tree([0, 1, 2, 3, 4], [-1, 0, 0, 1, 2], [0, 0, 1, 0, 0])
    a, b = torch.tensor([[0, 1]] * L), torch.tensor([[6, 7]] * L)
    experts = torch.stack([a, a, b, a, b])
    probs = torch.tensor([0.4, 0.4, 0.3, 0.3], dtype=torch.float64)
    expensive = {"a": 0.1, "b": 0.001, "c": 0.02}
    s = eat.schedule_tree(t, probs, experts, expensive)
    assert s.kept[0].tolist() == [0, 1, 3]
    full_e, full_s = eat.schedule_value([t], [probs], [experts], [torch.ones(5, dtype=torch.bool)], expensive)
    assert s.tokens_per_second > full_e / full_s
    # free experts: every node pays for itself, keep the whole tree
    cheap = {"a": 0.1, "b": 0.001, "c": 0.0}
    assert eat.schedule_tree(t, probs, experts, cheap).kept[0].tolist() == [0, 1, 2, 3, 4]


def _distinct(experts, kept, num_experts):
    """Distinct experts the batch's kept nodes activate, summed over layers."""
    ids = torch.cat([e[k] for e, k in zip(experts, kept)])
    return int(expert_union_counts(ids[None], torch.ones(1, len(ids), dtype=torch.bool), num_experts).sum())


def test_expert_dominated_cost_cuts_distinct_experts_within_an_expected_length_budget():
    """Two best-first trees of 24 nodes, 16 experts, a cost where expert reads dominate. Ratio only:
    the batch's distinct experts drop >= 20% and predicted tokens/s rise (measured 34 -> 19 experts,
    151 -> 173 tokens/s, expected tokens 6.05 -> 4.25). With max_expected_loss=0.03 it keeps >= 97%
    of the expected tokens and still reads fewer experts (34 -> 31, 163 tokens/s)."""
    g = torch.Generator().manual_seed(4)
    experts = 16
    popular = torch.randint(3, (V, L, K), generator=g)
    table = torch.where(torch.rand(V, L, K, generator=g) < 0.3, popular, torch.randint(experts, (V, L, K), generator=g))
    cases = [_case(g, 24, table) for _ in range(2)]
    args = [[c[j] for c in cases] for j in range(3)]
    cost = {"a": 5e-3, "b": 2e-5, "c": 1e-3}
    full = [torch.arange(24)] * 2
    full_e, full_s = eat.schedule_value(*args, full, cost)
    free = eat.schedule_batch(*args, cost)
    bounded = eat.schedule_batch(*args, cost, max_expected_loss=0.03)
    d_full = _distinct(args[2], full, experts)
    d_free, d_bounded = _distinct(args[2], free.kept, experts), _distinct(args[2], bounded.kept, experts)
    print(f"distinct experts full {d_full} ratio-only {d_free} bounded {d_bounded}; expected tokens "
          f"{full_e:.2f} / {free.expected_tokens:.2f} / {bounded.expected_tokens:.2f}; tokens/s "
          f"{full_e / full_s:.0f} / {free.tokens_per_second:.0f} / {bounded.tokens_per_second:.0f}")
    assert d_free <= 0.8 * d_full and free.tokens_per_second > full_e / full_s
    assert bounded.expected_tokens >= 0.97 * full_e
    assert d_bounded < d_full and bounded.tokens_per_second > full_e / full_s
    assert bounded.tokens_per_second <= free.tokens_per_second


def test_expert_parallel_term_avoids_the_busiest_rank():
    # experts 0-3 on rank 0, 4-7 on rank 1. Root uses {0, 1}; child 1 adds {2, 3} (rank 0 grows to
    # 4), child 2 adds {4, 5} (rank 1 grows to 2, the max stays 2). Same distinct count, same prob.
    t = _tree([0, 1, 2], [-1, 0, 0], [0, 0, 1])
    experts = torch.stack([torch.tensor([[0, 1]] * L), torch.tensor([[2, 3]] * L), torch.tensor([[4, 5]] * L)])
    probs = torch.tensor([0.3, 0.3], dtype=torch.float64)
    e2r = contiguous_expert_to_rank(E, 2)
    cost = {"a": 0.1, "b": 0.001, "c": 0.001, "d": 0.01}
    s = eat.schedule_tree(t, probs, experts, cost, expert_to_rank=e2r)
    assert s.kept[0].tolist() == [0, 2]
    with pytest.raises(ValueError, match="no expert_to_rank"):
        eat.schedule_tree(t, probs, experts, cost)


def test_padding_makes_rows_below_the_widest_tree_free():
    # tree 0 has 3 nodes, tree 1 has 2; every node reuses the root's experts; rows are expensive
    t0 = _tree([0, 1, 2], [-1, 0, 1], [0, 0, 0])
    t1 = _tree([0, 1], [-1, 0], [0, 0])
    ex = lambda n: torch.tensor([[[0, 1]] * L] * n)  # noqa: E731
    p0, p1 = torch.tensor([0.9, 0.8], dtype=torch.float64), torch.tensor([0.05], dtype=torch.float64)
    cost = {"a": 0.1, "b": 0.01, "c": 0.0}
    padded = eat.schedule_batch([t0, t1], [p0, p1], [ex(3), ex(2)], cost, pad_to_widest=True)
    assert [k.tolist() for k in padded.kept] == [[0, 1, 2], [0, 1]]  # tree 1's node fills a dead row
    flat = eat.schedule_batch([t0, t1], [p0, p1], [ex(3), ex(2)], cost, pad_to_widest=False)
    assert [k.tolist() for k in flat.kept] == [[0, 1, 2], [0]]  # a row of its own is not worth 0.05


def test_bad_inputs_are_named():
    t = _tree([0, 1], [-1, 0], [0, 0])
    ex = torch.zeros(2, L, K, dtype=torch.long)
    with pytest.raises(ValueError, match=r"probs\[0\] shape \(2,\) must be \[n - 1 = 1\]"):
        eat.schedule_tree(t, torch.tensor([0.5, 0.5]), ex, {"a": 1.0, "b": 1.0, "c": 1.0})
    with pytest.raises(ValueError, match=r"experts\[0\] shape"):
        eat.schedule_tree(t, torch.tensor([0.5]), ex[:1], {"a": 1.0, "b": 1.0, "c": 1.0})
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        eat.schedule_tree(t, torch.tensor([1.5]), ex, {"a": 1.0, "b": 1.0, "c": 1.0})
    with pytest.raises(ValueError, match="must be >= 0"):
        eat.schedule_tree(t, torch.tensor([0.5]), ex, {"a": 1.0, "b": -1.0, "c": 1.0})
    with pytest.raises(ValueError, match="price -1.0 must be a positive finite number"):
        eat.schedule_tree(t, torch.tensor([0.5]), ex, {"a": 1.0, "b": 1.0, "c": 1.0}, price=-1.0)
    with pytest.raises(ValueError, match=r"give a price \(2.0\) or max_expected_loss \(0.03\), not both"):
        eat.schedule_tree(t, torch.tensor([0.5]), ex, {"a": 1.0, "b": 1.0, "c": 1.0}, price=2.0,
                          max_expected_loss=0.03)


def test_a_price_keeps_the_prefix_worth_its_seconds_close_to_the_exhaustive_best():
    # with a price the greedy keeps the prefix of its order with the most expected - price x
    # seconds; on small trees that value is at most the exhaustive best and within a few percent
    g = torch.Generator().manual_seed(7)
    gaps = []
    for i in range(60):
        cases = [_case(g, int(torch.randint(2, 9, (1,), generator=g))) for _ in range(1 + i % 2)]
        args = [[c[j] for c in cases] for j in range(3)] + [_cost(g)]
        full = eat.schedule_value(*args[:3], [torch.ones(c[0].n, dtype=torch.bool) for c in cases], args[3])
        assert eat.schedule_value(*args[:3], None, args[3]) == full  # None: every node
        price = float(torch.empty(1).uniform_(0.2, 3.0, generator=g)) * full[0] / full[1]
        greedy = eat.schedule_batch(*args, price=price)
        best = eat.exhaustive_schedule(*args, price=price)
        value, top = greedy.expected_tokens - price * greedy.seconds, best.expected_tokens - price * best.seconds
        assert value <= top + 1e-9 * abs(top)
        assert (greedy.full_expected, greedy.full_seconds) == pytest.approx(full)
        gaps.append((top - value) / abs(top))
    gaps = torch.tensor(gaps)
    print(f"priced: greedy gap max {gaps.max():.4f} mean {gaps.mean():.5f}")
    assert float(gaps.max()) < 0.05 and float(gaps.mean()) < 0.005


def test_a_higher_price_never_keeps_more_and_the_bound_fraction_is_untouched():
    g = torch.Generator().manual_seed(8)
    tree, probs, experts = _case(g, 40)
    cost = {"a": 0.2, "b": 0.01, "c": 0.02}
    full = eat.schedule_value([tree], [probs], [experts], [torch.ones(tree.n, dtype=torch.bool)], cost)
    kept = [eat.schedule_tree(tree, probs, experts, cost, price=m * full[0] / full[1]).kept[0].numel()
            for m in (0.01, 0.3, 1.0, 3.0, 30.0)]
    assert kept == sorted(kept, reverse=True) and kept[0] == tree.n and kept[-1] == 1, kept
    # a price too high for any node keeps the roots; None schedules as before (no full_* fields)
    assert eat.schedule_tree(tree, probs, experts, cost).full_seconds is None
