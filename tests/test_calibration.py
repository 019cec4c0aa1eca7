"""AcceptanceCalibrator: corrects a miscalibrated draft, follows drift, stays tree-consistent."""

import json
import random

import pytest
import torch

from sglang_jetspec.core.acceptance import accept_greedy
from sglang_jetspec.core.calibration import AcceptanceCalibrator, labelled_nodes, node_outcomes
from sglang_jetspec.core.tree import build_tree


def curve(shift: float):
    """True acceptance f(score) = sigmoid(2 (score + shift)); far from exp(score) (the draft)."""
    return lambda s: torch.sigmoid(2.0 * (s + shift))


def feed(cal: AcceptanceCalibrator, f, rounds: int, seed: int, m: int = 2000, depth_of=None):
    g = torch.Generator().manual_seed(seed)
    for _ in range(rounds):
        s = -8.0 * torch.rand(m, generator=g)  # [m] scores in [-8, 0]
        d = None if depth_of is None else depth_of(m, g)
        p = f(s) if d is None else f(s, d)
        acc = torch.rand(m, generator=g) < p  # Bernoulli(f(score))
        cal.update(s, acc, d)


GRID = torch.linspace(-7.5, -0.05, 60)


def test_prior_trusts_the_draft_before_any_data():
    cal = AcceptanceCalibrator()
    rel = (cal.predict(GRID) / GRID.exp() - 1).abs()  # a linear spline of exp: chord error only
    assert rel.max() < 0.035, rel.max()
    assert cal.expected_error() != cal.expected_error()  # NaN: no data yet


def test_converges_to_a_known_curve_and_corrects_the_draft():
    f = curve(3.0)
    cal = AcceptanceCalibrator()
    feed(cal, f, rounds=60, seed=0)
    err = (cal.predict(GRID) - f(GRID)).abs()
    raw = (GRID.exp() - f(GRID)).abs()
    assert err.mean() < 0.02 and err.max() < 0.06, (err.mean(), err.max())
    assert raw.mean() > 0.2  # the draft alone is badly off: the calibrator did the work
    assert cal.expected_error() < 0.5 * cal.expected_error(of="draft")


def test_expected_calibration_error_falls_with_data():
    f = curve(3.0)
    cal = AcceptanceCalibrator(half_life=5)
    feed(cal, f, rounds=1, seed=1)
    early = cal.expected_error()
    feed(cal, f, rounds=60, seed=2)
    late = cal.expected_error()
    assert early > 0.2 and late < 0.04 and late < 0.2 * early, (early, late)


def test_decay_follows_a_shift_in_acceptance():
    f1, f2 = curve(3.0), curve(1.0)
    fast, never = AcceptanceCalibrator(half_life=4), AcceptanceCalibrator(half_life=None)
    for cal in (fast, never):
        feed(cal, f1, rounds=40, seed=3)
        feed(cal, f2, rounds=40, seed=4)
    err_fast = (fast.predict(GRID) - f2(GRID)).abs().mean()
    err_never = (never.predict(GRID) - f2(GRID)).abs().mean()
    assert err_fast < 0.03 and err_never > 3 * err_fast, (err_fast, err_never)


def test_depth_buckets_learn_separate_curves():
    def f(s, d):
        return torch.where(d == 1, torch.sigmoid(2 * (s + 2)), torch.sigmoid(2 * (s + 5)))

    def depths(m, g):
        return torch.randint(1, 4, (m,), generator=g)

    cal = AcceptanceCalibrator(depth_bins=3)
    feed(cal, f, rounds=40, seed=5, depth_of=depths)
    for d in (1, 2, 3):
        dd = torch.full_like(GRID, d, dtype=torch.long)
        assert (cal.predict(GRID, dd) - f(GRID, dd)).abs().mean() < 0.03, d
    with pytest.raises(ValueError, match="depth_bins = 3 needs"):
        cal.predict(GRID)


def test_state_dict_is_json_and_round_trips():
    cal = AcceptanceCalibrator(n_knots=21, half_life=50)
    feed(cal, curve(2.0), rounds=5, seed=6, m=300)
    state = json.loads(json.dumps(cal.state_dict()))
    back = AcceptanceCalibrator.from_state_dict(state)
    assert torch.equal(back.predict(GRID), cal.predict(GRID))
    assert back.expected_error() == pytest.approx(cal.expected_error())
    with pytest.raises(ValueError, match="does not match"):
        AcceptanceCalibrator(n_knots=11).load_state_dict(state)


def test_update_rejects_mismatched_shapes():
    cal = AcceptanceCalibrator()
    with pytest.raises(ValueError, match=r"scores \(3,\) and accepted \(2,\)"):
        cal.update(torch.zeros(3), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="score_min 1.0"):
        AcceptanceCalibrator(score_min=1.0)


def random_logprobs(seed, depth=6, vocab=12):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(2.0 * torch.randn(depth, vocab, generator=g), dim=-1)  # [D, V]


def test_tree_probs_respect_parents_and_exclusive_siblings():
    cal = AcceptanceCalibrator()
    s = -8.0 * torch.rand(4000, generator=torch.Generator().manual_seed(7))
    cal.update(s, torch.ones_like(s, dtype=torch.bool))  # an over-eager map: ~1 everywhere
    trees = [build_tree(0, random_logprobs(seed), budget=40, width=4) for seed in range(5)]
    batched = cal.trees_probs(trees)  # one pass over the batch == one call per tree
    for tree, q in zip(trees, batched):
        assert torch.equal(q, cal.tree_probs(tree))
        p = torch.cat([torch.ones(1), q])  # [n], root 1
        par = tree.parents[1:]
        assert bool((p[1:] <= p[par] + 1e-6).all())
        sums = torch.zeros(tree.n).index_add_(0, par, p[1:])
        assert bool((sums <= p + 1e-5).all()), (sums - p).max()
        assert float(sums[0]) > 0.99  # the cap is binding, so the test has teeth


def target_argmax(path: tuple, vocab: int, draft_top: int, seed: int) -> int:
    """A deterministic 'target' that often agrees with the draft's top token."""
    rng = random.Random(hash((seed,) + path))
    return draft_top if rng.random() < 0.7 else rng.randrange(vocab)


def test_labels_beyond_the_verified_prefix_match_the_larger_tree():
    """Greedy fates are tree-independent: the extension labels (children of verified nodes,
    decided by the bonus) must equal what verifying the big tree would have said."""
    vocab, extension_hits, extension_nodes = 12, 0, 0
    for seed in range(40):
        lp = random_logprobs(seed, vocab=vocab)
        top = lp.argmax(-1).tolist()
        big = build_tree(5, lp, budget=48, width=3)
        toks = big.tokens.tolist()
        logits = torch.zeros(big.n, vocab)
        for i in range(big.n):
            path = tuple(toks[j] for j in big.path_to(i))
            depth = len(path) - 1
            logits[i, target_argmax(path, vocab, top[min(depth, len(top) - 1)], seed)] = 1.0
        truth = set(accept_greedy(big, logits).accepted_nodes)
        v = 1 + seed % 12  # verify only a prefix
        small = build_tree(5, lp, budget=v, width=3)
        res = accept_greedy(small, logits[:v])
        idx, acc = labelled_nodes(big, res.accepted_nodes, v, res.bonus_token)
        assert set(range(1, v)) <= set(idx.tolist())
        for i, a in zip(idx.tolist(), acc.tolist()):
            assert a == (i in truth), (seed, v, i)
        ext = idx >= v
        extension_nodes += int(ext.sum())
        extension_hits += int(acc[ext].sum())
        s, a = node_outcomes(big, res.accepted_nodes, v, res.bonus_token)
        assert torch.equal(s, big.scores[idx]) and torch.equal(a, acc)
    assert extension_nodes > 100 and extension_hits > 3  # the extension is exercised both ways


def test_labelled_nodes_rejects_a_bad_path():
    tree = build_tree(0, random_logprobs(0), budget=10, width=2)
    with pytest.raises(ValueError, match=r"accepted path \[1, 2\] must start at the root"):
        labelled_nodes(tree, [1, 2])
    with pytest.raises(ValueError, match="verified_n 11 must be in"):
        labelled_nodes(tree, [0], verified_n=11)


def test_update_from_trees_counts_every_labelled_node():
    cal = AcceptanceCalibrator()
    trees = [build_tree(0, random_logprobs(s), budget=20, width=3) for s in range(3)]
    m = cal.update_from_trees(trees, [[0], [0, 1], [0]], verified_sizes=[20, 10, 5])
    assert m == 19 + 9 + 4 and cal.updates == 1
    assert float(cal.count.sum()) == pytest.approx(m)


@pytest.mark.parametrize("depth_bins", [1, 3])
def test_plain_python_paths_equal_the_tensor_reference(depth_bins):
    """trees_probs (plain Python on small batches) against its one-pass tensor reference, and
    update_from_trees (Python lists) against `update` on labelled_nodes' tensors, on random
    trees, paths and bonus tokens over several rounds."""
    rng = random.Random(depth_bins)
    fast = AcceptanceCalibrator(depth_bins=depth_bins)
    ref = AcceptanceCalibrator(depth_bins=depth_bins)
    for rnd in range(12):
        trees = [build_tree(rng.randrange(12), random_logprobs(100 * rnd + r, depth=6, vocab=12),
                            budget=rng.randrange(1, 40), width=rng.randrange(1, 5)) for r in range(rng.randrange(1, 6))]
        got, want = fast.trees_probs(trees), ref._trees_probs_torch(trees)
        for a, b in zip(got, want):
            assert a.shape == b.shape
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()
        paths, sizes, bonus = [], [], []
        for t in trees:
            v = rng.randrange(1, t.n + 1)
            path = [0]
            while True:  # a random accepted path inside the verified prefix
                kids = [i for i in range(1, v) if int(t.parents[i]) == path[-1]]
                if not kids or rng.random() < 0.3:
                    break
                path.append(rng.choice(kids))
            paths.append(path)
            sizes.append(v)
            bonus.append(rng.choice([None, rng.randrange(12)]))
        m = fast.update_from_trees(trees, paths, sizes, bonus)
        parts = [labelled_nodes(t, p, v, b) for t, p, v, b in zip(trees, paths, sizes, bonus)]
        idx = [i for i, _ in parts]
        scores = torch.cat([t.scores[i] for t, i in zip(trees, idx)])
        depths = torch.cat([t.depths[i] for t, i in zip(trees, idx)])
        if all(t.n == 1 for t in trees):
            assert m == 0
            continue
        assert m == int(scores.numel())
        if m:
            ref.update(scores, torch.cat([a for _, a in parts]), depths)
        for name in ("count", "hits", "pred", "draft"):
            assert torch.allclose(getattr(fast, name), getattr(ref, name), rtol=1e-6, atol=1e-9), name
    assert fast.updates == ref.updates > 0
    assert float(fast.count.sum()) > 10  # the comparison saw real data


def test_plain_python_update_rejects_nan_scores():
    cal = AcceptanceCalibrator()
    tree = build_tree(0, random_logprobs(1), budget=6, width=2)
    tree.scores[2] = float("nan")
    with pytest.raises(ValueError, match="without NaN"):
        cal.update_from_trees([tree], [[0]])
