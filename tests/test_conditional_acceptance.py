"""The conditional acceptance model (core/conditional_acceptance.py): consistent node
probabilities, it learns P(child accepted | parent accepted) per sibling rank from the children
of accepted nodes only (nodes under a rejected parent teach nothing), labels beyond the verified
prefix through the bonus token, and in an expert replay it ranks nodes better than the score
calibrator on a draft whose saturated scores hide which child wins."""

import random

import pytest
import torch

from sglang_jetspec.core.conditional_acceptance import ConditionalAcceptance
from sglang_jetspec.core.calibration import AcceptanceCalibrator
from sglang_jetspec.core.tree import DraftTree, build_tree


def saturated_tree(depth: int, kids: int, seed: int) -> DraftTree:
    """Every node has `kids` children at depths < depth, all with cumulative score 0 (what the
    n-gram prior's capped rescoring gives), tokens random and distinct among siblings."""
    rnd = random.Random(seed)
    tokens, parents, depths, scores, ranks = [rnd.randrange(1000)], [-1], [0], [0.0], [0]
    frontier = [0]
    while frontier:
        node = frontier.pop(0)
        if depths[node] >= depth:
            continue
        for r, tok in enumerate(rnd.sample(range(1000), kids)):
            tokens.append(tok)
            parents.append(node)
            depths.append(depths[node] + 1)
            scores.append(0.0)
            ranks.append(r)
            frontier.append(len(tokens) - 1)
    return DraftTree(*(torch.tensor(x) for x in (tokens, parents, depths)), torch.tensor(scores), torch.tensor(ranks))


def accepted_path(tree: DraftTree, p_rank0: float, p_rank1: float, rnd: random.Random) -> list[int]:
    """The target accepts the rank-0 child with p_rank0, else the rank-1 child with p_rank1 / (1 - p_rank0)."""
    kids = tree.children()
    path = [0]
    while kids[path[-1]]:
        u = rnd.random()
        ch = kids[path[-1]]
        if u < p_rank0:
            path.append(ch[0])
        elif u < p_rank0 + p_rank1 and len(ch) > 1:
            path.append(ch[1])
        else:
            break
    return path


def test_probabilities_respect_parents_and_exclusive_siblings():
    model = ConditionalAcceptance(half_life=None)
    rnd = random.Random(0)
    def tree(seed):
        lp = torch.log_softmax(3 * torch.randn(5, 30, generator=torch.Generator().manual_seed(seed)), -1)
        return build_tree(seed, lp, 24, 4)

    for seed in range(40):  # learn something first, so the probabilities are not the prior's
        t = tree(seed)
        model.update_from_trees([t], [accepted_path(t, 0.7, 0.1, rnd)])
    for seed in range(40, 60):
        t = tree(seed)
        p = [1.0] + model.tree_prob_list(t)
        par = t.parents.tolist()
        total = {}
        for i in range(1, t.n):
            assert 0.0 <= p[i] <= p[par[i]] + 1e-12
            total[par[i]] = total.get(par[i], 0.0) + p[i]
        assert all(s <= p[q] + 1e-9 for q, s in total.items())
        assert torch.allclose(model.tree_probs(t), torch.tensor(p[1:], dtype=torch.float32))


def test_learns_the_rank_a_saturated_score_hides():
    model, cal, rnd = ConditionalAcceptance(half_life=None), AcceptanceCalibrator(half_life=None), random.Random(1)
    for r in range(300):
        t = saturated_tree(3, 2, r)
        path = accepted_path(t, 0.85, 0.1, rnd)
        model.update_from_trees([t], [path])
        cal.update_from_trees([t], [path])
    t = saturated_tree(3, 2, 999)
    q = model.step_probs(t)
    ranks = t.ranks.tolist()[1:]
    q0 = [x for x, r in zip(q, ranks) if r == 0]
    q1 = [x for x, r in zip(q, ranks) if r == 1]
    assert all(abs(x - 0.85) < 0.05 for x in q0), q0
    assert all(abs(x - 0.10) < 0.05 for x in q1), q1
    p, c = model.tree_prob_list(t), cal.trees_prob_lists([t])[0]
    kids = t.children()
    first, second = kids[0]
    assert p[first - 1] > 0.8 and p[second - 1] < 0.15  # the conditional model tells them apart
    assert abs(c[first - 1] - c[second - 1]) < 1e-9  # the score calibrator cannot: same score


def test_own_draft_logprob_bins_split_what_the_score_hides():
    """With logp_bins the model splits each group on the node's own draft log-prob (capped scores
    hide it): rank-0 children whose own log-prob is high are accepted 90%, low 30%."""
    rnd = random.Random(2)
    binned, plain = ConditionalAcceptance(half_life=None, logp_bins=(-0.5,)), ConditionalAcceptance(half_life=None)

    def round_(seed):
        t = saturated_tree(2, 1, seed)  # a chain: rank 0 everywhere, score steps all 0
        own = torch.tensor([0.0] + [rnd.choice([-0.1, -2.0]) for _ in range(t.n - 1)])
        path = [0]
        for i in range(1, t.n):
            if rnd.random() >= (0.9 if own[i] > -0.5 else 0.3):
                break
            path.append(i)
        return t, own, path

    for r in range(400):
        t, own, path = round_(r)
        binned.update_from_trees([t], [path], node_logps=[own])
        plain.update_from_trees([t], [path])
    t = saturated_tree(2, 1, 999)
    hi, lo = torch.tensor([0.0, -0.1, -0.1]), torch.tensor([0.0, -2.0, -2.0])
    assert abs(binned.step_probs(t, hi)[0] - 0.9) < 0.07 and abs(binned.step_probs(t, lo)[0] - 0.3) < 0.07
    assert plain.step_probs(t, hi) == plain.step_probs(t, lo)  # ignores them
    with pytest.raises(ValueError, match="pass node_logps"):
        binned.trees_probs([t])
    with pytest.raises(ValueError, match="2 entries for a tree of 3 nodes"):
        binned.tree_probs(t, hi[:2])


def test_only_children_of_accepted_nodes_teach():
    model = ConditionalAcceptance(half_life=None)
    t = saturated_tree(2, 2, 5)  # root -> a, b; a -> a0, a1; b -> b0, b1
    kids = t.children()
    a = kids[0][0]
    model.update_from_trees([t], [[0, a]])
    # labelled: the root's two children (a accepted, b not) and a's two children (neither)
    assert sum(model.count) == pytest.approx(4.0)
    assert sum(model.hits) == pytest.approx(1.0)
    before = list(model.count)
    model.update_from_trees([DraftTree(t.tokens[:1], t.parents[:1], t.depths[:1], t.scores[:1], t.ranks[:1])], [[0]])
    assert model.count == before  # a round of roots only teaches nothing (and does not decay)


def test_the_bonus_labels_children_beyond_the_verified_prefix():
    t = saturated_tree(2, 2, 7)
    kids = t.children()
    a, b = kids[0]
    # verify only the root and a (a prefix in node order: nodes 0, 1); the bonus after a is a's rank-1 child
    assert (a, b) == (1, 2)
    model = ConditionalAcceptance(half_life=None)
    n = model.update_from_trees([t], [[0, a]], verified_sizes=[2], bonus_tokens=[int(t.tokens[kids[a][1]])])
    # labelled: a (verified, accepted), b (its parent, the root, verified: not the bonus after a), and
    # a's children (parent a ends the path): a1 accepted via the bonus, a0 not
    assert n == 4 and sum(model.hits) == pytest.approx(2.0)


@pytest.mark.parametrize("kw,msg", [
    (dict(step_min=0.0), "step_min 0.0"), (dict(n_knots=1), "n_knots 1"), (dict(rank_bins=0), "rank_bins 0"),
    (dict(half_life=0), "half_life 0"), (dict(prior_strength=0), "prior_strength 0"),
    (dict(logp_bins=(-1.0, -0.5)), "descending order"), (dict(logp_bins=(0.5,)), "descending order"),
])
def test_bad_settings_are_named(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ConditionalAcceptance(**kw)


def test_mismatched_rounds_are_refused():
    t = saturated_tree(1, 2, 0)
    with pytest.raises(ValueError, match="2 accepted paths for 1 trees"):
        ConditionalAcceptance().update_from_trees([t], [[0], [0]])
    with pytest.raises(ValueError, match="accepted path"):
        ConditionalAcceptance().update_from_trees([t], [[1]])


@pytest.mark.parametrize("bins", [(), (-0.5, -2.0)])
@pytest.mark.parametrize("seed", range(4))
def test_batch_products_equal_the_per_node_reference(seed, bins):
    """trees_probs (tensor ops over the batch, one pass per depth) against the per-node Python
    reference `_path_products`, with and without the depth levels, on random trees (prior-like
    saturated scores included) after learning from random rounds."""
    g = torch.Generator().manual_seed(seed)
    rnd = random.Random(seed)
    model = ConditionalAcceptance(half_life=50.0, depth_bins=2 if seed % 2 else 1, logp_bins=bins)

    def tree():
        lp = torch.log_softmax(3 * torch.randn(6, 40, generator=g), -1)
        t = build_tree(int(torch.randint(40, (1,), generator=g)), lp, int(torch.randint(1, 40, (1,), generator=g)),
                       int(torch.randint(1, 6, (1,), generator=g)))
        if rnd.random() < 0.3:  # saturated scores, as the prior's cap gives
            t = DraftTree(t.tokens, t.parents, t.depths, torch.zeros_like(t.scores), t.ranks)
        own = torch.cat([torch.zeros(1), -3 * torch.rand(t.n - 1, generator=g)])
        return t, own

    for _ in range(30):
        batch = [tree() for _ in range(rnd.randint(1, 5))]
        trees, owns = [b[0] for b in batch], [b[1] for b in batch]
        paths = [accepted_path(t, 0.7, 0.2, rnd) for t in trees]
        model.update_from_trees(trees, paths, node_logps=owns if bins else None)
    batch = [tree() for _ in range(12)]
    trees, owns = [b[0] for b in batch], [b[1] for b in batch]
    lps = owns if bins else None
    for levels in (None, model.levels()):
        fast = model.batch_products(trees, levels, lps)
        for t, own, got in zip(trees, owns, fast):
            want = model._path_products(t, levels, own if bins else None)
            assert got.shape == (t.n - 1,)
            torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    probs = model.trees_probs(trees, lps)
    for t, own, got in zip(trees, owns, probs):
        torch.testing.assert_close(got, model.tree_probs(t, own if bins else None), rtol=0, atol=1e-6)
