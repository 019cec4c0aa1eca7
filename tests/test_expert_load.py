"""Expert-load reference math: hand-made cases with known answers, then random property checks."""

import pytest
import torch

from sglang_jetspec.core import expert_load as el

# Two trees, three node slots, two layers, top-2, four experts on two EP ranks ({0,1}, {2,3}).
# tree 0: node 2 is padding (its experts must not count)
# tree 1: node 0 names expert 0 twice in layer 0 (one distinct expert, two assignments)
IDS = torch.tensor(
    [
        [[[0, 1], [3, -1]], [[1, 2], [3, 0]], [[3, 3], [1, 1]]],
        [[[0, 0], [-1, -1]], [[2, -1], [2, 3]], [[-1, -1], [-1, -1]]],
    ]
)  # [B=2, N=3, L=2, K=2]
VALID = torch.tensor([[True, True, False], [True, True, True]])
E, R = 4, 2


def test_hand_made_histogram_and_unions():
    hist = el.expert_histogram(IDS, VALID, E)
    assert hist.tolist() == [
        [[1, 2, 1, 0], [1, 0, 0, 2]],
        [[2, 0, 1, 0], [0, 0, 1, 1]],
    ]
    assert el.expert_union_counts(IDS, VALID, E).tolist() == [[3, 2], [2, 2]]
    assert el.expert_union_mask(IDS, VALID, E, batch=True).tolist() == [
        [True, True, True, False],
        [True, False, True, True],
    ]
    assert el.expert_union_counts(IDS, VALID, E, batch=True).tolist() == [3, 3]


def test_hand_made_rank_loads():
    e2r = el.contiguous_expert_to_rank(E, R)
    assert e2r.tolist() == [0, 0, 1, 1]
    mask = el.expert_union_mask(IDS, VALID, E)
    hist = el.expert_histogram(IDS, VALID, E)
    assert el.rank_loads(mask, e2r, R).tolist() == [[[2, 1], [1, 1]], [[1, 1], [0, 2]]]
    assert el.rank_loads(hist, e2r, R).tolist() == [[[3, 1], [1, 2]], [[2, 1], [0, 2]]]
    assert el.max_rank_load(hist, e2r, R).tolist() == [[3, 2], [2, 2]]


def test_hand_made_expert_load_bundle():
    load = el.expert_load(IDS, VALID, E, el.contiguous_expert_to_rank(E, R), R)
    assert load.batch_counts.tolist() == [3, 3]
    assert load.union_counts.tolist() == [[3, 2], [2, 2], [3, 3]]
    assert load.hist[-1].tolist() == [[3, 2, 2, 0], [1, 0, 1, 3]]
    assert load.rank_tokens[-1].tolist() == [[5, 2], [1, 4]]
    assert load.max_rank_tokens[-1].tolist() == [5, 4]
    assert load.rank_experts[-1].tolist() == [[2, 1], [1, 2]]
    assert load.max_rank_experts.tolist() == [[2, 1], [1, 2], [2, 2]]
    assert torch.equal(load.batch_union, el.expert_union_mask(IDS, VALID, E, batch=True))
    assert load.hist.dtype == torch.int32


def test_hand_made_marginal():
    union = torch.tensor([[True, True, False, False], [False, False, False, True]])  # [L=2, E=4]
    node = torch.tensor([[1, 2], [3, 0]])  # layer 0 adds expert 2, layer 1 adds expert 0
    assert el.marginal_new_experts(union, node).item() == 2
    assert el.marginal_new_experts(union, node, per_layer=True).tolist() == [1, 1]
    cands = torch.tensor([[[2, 2], [1, 2]], [[0, 1], [3, -1]], [[-1, -1], [-1, -1]]])  # [M=3, L, K]
    assert el.marginal_new_experts(union, cands).tolist() == [3, 0, 0]
    assert el.union_add(union, node).tolist() == [[True, True, True, False], [True, False, False, True]]


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="expert id 4 must be < num_experts 4"):
        el.expert_histogram(IDS + 1, VALID, E)
    with pytest.raises(ValueError, match=r"node_valid shape \(2, 2\)"):
        el.expert_histogram(IDS, VALID[:, :2], E)
    with pytest.raises(ValueError, match="num_experts 6 must be a multiple of num_ranks 4"):
        el.contiguous_expert_to_rank(6, 4)
    with pytest.raises(ValueError, match="node_topk layers 3 must match union_mask layers 2"):
        el.marginal_new_experts(torch.zeros(2, 4, dtype=torch.bool), torch.zeros(3, 2, dtype=torch.long))


def _random_routing(seed, B=3, N=9, L=4, K=3, E=10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(-1, E, (B, N, L, K), generator=g)
    valid = torch.rand(B, N, generator=g) > 0.25
    return ids, valid, E


def _python_union(ids, valid, E):
    """[B, L] sets of experts, by plain loops (the slowest, most obvious oracle)."""
    B, N, L, K = ids.shape
    return [[{int(e) for n in range(N) if valid[b, n] for e in ids[b, n, l] if e >= 0} for l in range(L)]
            for b in range(B)]


@pytest.mark.parametrize("seed", range(6))
def test_random_unions_match_python_sets(seed):
    ids, valid, E = _random_routing(seed)
    sets = _python_union(ids, valid, E)
    mask = el.expert_union_mask(ids, valid, E)
    for b, per_layer in enumerate(sets):
        for l, s in enumerate(per_layer):
            assert set(mask[b, l].nonzero().flatten().tolist()) == s
    batch = el.expert_union_counts(ids, valid, E, batch=True)
    assert batch.tolist() == [len(set().union(*(sets[b][l] for b in range(len(sets))))) for l in range(ids.shape[2])]
    counts = el.expert_union_counts(ids, valid, E)
    assert (batch >= counts.amax(0)).all() and (batch <= counts.sum(0)).all()


@pytest.mark.parametrize("seed", range(4))
def test_random_rank_loads_conserve_totals(seed):
    ids, valid, E = _random_routing(seed, E=12)
    e2r = torch.randint(0, 3, (E,), generator=torch.Generator().manual_seed(seed))
    load = el.expert_load(ids, valid, E, e2r, 3)
    slots = ((ids >= 0) & valid[:, :, None, None]).sum((1, 3))  # [B, L] valid assignments
    assert torch.equal(load.rank_tokens[:-1].sum(-1), slots.int())
    assert torch.equal(load.rank_experts.sum(-1), load.union_counts)
    assert torch.equal(load.hist[-1], load.hist[:-1].sum(0))
    # node order and padding content do not matter
    perm = torch.randperm(ids.shape[1], generator=torch.Generator().manual_seed(seed))
    noisy = torch.where(valid[:, :, None, None], ids, torch.randint_like(ids, 0, E))
    again = el.expert_load(noisy[:, perm], valid[:, perm], E, e2r, 3)
    assert torch.equal(again.hist, load.hist) and torch.equal(again.rank_experts, load.rank_experts)


@pytest.mark.parametrize("seed", range(4))
def test_marginal_equals_union_growth(seed):
    ids, valid, E = _random_routing(seed, E=40)  # enough experts that the union is not full
    union = el.expert_union_mask(ids, valid, E, batch=True)  # [L, E]
    g = torch.Generator().manual_seed(100 + seed)
    cands = torch.randint(-1, E, (7, ids.shape[2], ids.shape[3]), generator=g)  # [M, L, K]
    marg = el.marginal_new_experts(union, cands)
    per_layer = el.marginal_new_experts(union, cands, per_layer=True)
    assert torch.equal(per_layer.sum(-1), marg)
    for m in range(cands.shape[0]):
        grown = el.union_add(union, cands[m])
        assert marg[m].item() == grown.sum().item() - union.sum().item()
        assert el.marginal_new_experts(grown, cands[m]).item() == 0  # once added, nothing is new
    assert marg.max() > 0  # the random case is not trivially all-zero
