"""The n-gram prior (core/pair_prior.py) and the trees it reshapes (core/tree.py, prior=...).

The rescored builder is checked against a plain reference on random inputs: expand the whole
candidate tree (every node's children = the width best of its row by min(0, draft log-prob +
bonus under the node's path)) and repeatedly take the best frontier node -- the definition."""

import math

import pytest
import torch

from sglang_jetspec.core.pair_prior import FILE_NAME, PairPrior, PriorSettings
from sglang_jetspec.core.tree import build_tree_from_top

V = 12


def _prior(seed: int, **settings) -> PairPrior:
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, V, (int(torch.randint(2, 30, (), generator=g)),), generator=g).tolist()
            for _ in range(6)]
    return PairPrior.from_sequences(seqs, V, PriorSettings(**settings))


def test_bonus_matches_the_formula():
    seqs = [[1, 2, 1, 2, 3], [1, 3]]
    s = PriorSettings(weight=0.5, weight3=0.25, beta=2.0, beta3=1.0, clip=3.0)
    pp = PairPrior.from_sequences(seqs, 5, s)
    # bigrams (1,2) x2, (2,1), (2,3), (1,3); trigrams (1,2,1), (2,1,2), (1,2,3)
    assert len(pp) == 4 and pp.trigram.shape == (3, 4)
    assert pp.unigram.tolist() == [0, 1, 2, 2, 0]  # the tokens after each sequence's first
    p1 = lambda t: (pp.unigram[t].item() + 1) / (5 + 5)  # noqa: E731
    c2 = {2: 2, 3: 1}
    p2 = lambda t: (c2.get(t, 0) + 2.0 * p1(t)) / (3 + 2.0)  # noqa: E731  after token 1
    want_bi = [0.5 * max(math.log(p2(t) / p1(t)), -3.0) for t in (2, 3, 4)]
    assert pp.bonus(None, 1, [2, 3, 4]) == pytest.approx(want_bi)  # no grandparent: bigram only
    assert pp.bonus(0, 1, [2, 3, 4]) == pytest.approx(want_bi)     # (0, 1) never seen
    # after (2, 1): the trigram saw only token 2 (once)
    p3 = lambda t: ((t == 2) + 1.0 * p2(t)) / (1 + 1.0)  # noqa: E731
    want = [b + 0.25 * max(math.log(p3(t) / p2(t)), -3.0) for b, t in zip(want_bi, (2, 3, 4))]
    got = pp.bonus(2, 1, [2, 3, 4])
    assert got == pytest.approx(want)
    assert got[0] > want_bi[0] and got[1] < want_bi[1]  # the grandparent moves both ways
    assert pp.bonus(None, 4, [1, 2]) == [0.0, 0.0]  # a parent never seen has no opinion
    assert pp.with_settings(clip=0.1).bonus(None, 1, [4]) == [pytest.approx(-0.05)]


def test_bonus_of_hand_made_tables_follows_the_formula():
    """Counted answers always hold (p, t) when they hold (g, p, t); a file made otherwise still
    loads, and the trigram term then divides by the unseen pair's P2, as the formula says."""
    s = PriorSettings(weight=0.5, weight3=0.5, beta=2.0, beta3=1.0, clip=8.0)
    bigram = torch.tensor([[1, 2, 3]], dtype=torch.int32)             # (1, 2) three times
    trigram = torch.tensor([[0, 1, 3, 2], [0, 4, 3, 1]], dtype=torch.int32)  # (1, 3) and (4, *) never bigrams
    unigram = torch.tensor([0, 1, 3, 2, 0])
    pp = PairPrior(bigram, trigram, unigram, s)
    p1 = lambda t: (unigram[t].item() + 1) / (6 + 5)  # noqa: E731
    p2 = lambda t: ((3 if t == 2 else 0) + 2.0 * p1(t)) / (3 + 2.0)  # noqa: E731  after token 1
    p3 = lambda t: ((2 if t == 3 else 0) + 1.0 * p2(t)) / (2 + 1.0)  # noqa: E731  after (0, 1)
    want = [0.5 * math.log(p2(t) / p1(t)) + 0.5 * math.log(p3(t) / p2(t)) for t in (2, 3)]
    assert pp.bonus(0, 1, [2, 3]) == pytest.approx(want)
    assert pp.bonus(0, 4, [3]) == [0.0]  # a parent without bigrams has no opinion, trigrams or not


def test_log_prob_matches_the_formula_and_is_a_distribution():
    """log_prob is log P3 (where the context was counted), else log P2, else log P1, with the
    docstring's smoothing; in every context the probabilities sum to 1 over the vocabulary."""
    seqs = [[1, 2, 1, 2, 3], [1, 3]]
    pp = PairPrior.from_sequences(seqs, 5, PriorSettings(beta=2.0, beta3=1.0))
    p1 = lambda t: (pp.unigram[t].item() + 1) / (5 + 5)  # noqa: E731
    p2 = lambda t: ({2: 2, 3: 1}.get(t, 0) + 2.0 * p1(t)) / (3 + 2.0)  # noqa: E731  after token 1
    p3 = lambda t: ((t == 2) + 1.0 * p2(t)) / (1 + 1.0)  # noqa: E731  after (2, 1)
    for t in range(5):
        assert pp.log_prob(2, 1, t) == pytest.approx(math.log(p3(t)))
        assert pp.log_prob(None, 1, t) == pytest.approx(math.log(p2(t)))
        assert pp.log_prob(0, 1, t) == pytest.approx(math.log(p2(t)))  # (0, 1) never counted
        assert pp.log_prob(None, 4, t) == pytest.approx(math.log(p1(t)))  # 4 never a parent
    assert pp.log_prob(2, 1, 2) > pp.log_prob(None, 1, 2) > pp.log_prob(None, 1, 4)
    rich = _prior(3)
    for g in (None, *range(V)):
        for parent in range(V):
            total = sum(math.exp(rich.log_prob(g, parent, t)) for t in range(V))
            assert total == pytest.approx(1.0, abs=1e-12)


def test_node_logprobs_read_each_node_after_its_two_predecessors():
    from sglang_jetspec.core.tree import DraftTree

    pp = _prior(5)
    tokens, parents = torch.tensor([3, 7, 1, 9, 4]), torch.tensor([-1, 0, 0, 1, 3])
    tree = DraftTree(tokens, parents, torch.tensor([0, 1, 1, 2, 3]), torch.zeros(5), torch.tensor([0, 0, 1, 0, 0]))
    got = pp.node_logprobs(tree, prev_token=6)
    want = [0.0, pp.log_prob(6, 3, 7), pp.log_prob(6, 3, 1), pp.log_prob(3, 7, 9), pp.log_prob(7, 9, 4)]
    assert got.dtype == torch.float64 and got.tolist() == pytest.approx(want)
    assert pp.node_logprobs(tree, None)[1] == pytest.approx(pp.log_prob(None, 3, 7))
    assert (got[1:] < 0).all()


def test_save_load_roundtrip_keeps_counts_and_settings(tmp_path):
    pp = _prior(0, weight=0.7, beta3=3.0, pool=9)
    pp.save(str(tmp_path))
    back = PairPrior.load(str(tmp_path))
    assert back.settings == pp.settings
    for g in (None, *range(V)):
        for p in range(V):
            assert back.bonus(g, p, list(range(V))) == pytest.approx(pp.bonus(g, p, list(range(V))))
    assert PairPrior.load(str(tmp_path), weight=0.0).settings.weight == 0.0  # an override
    assert PairPrior.load(str(tmp_path / "nowhere")) is None
    assert back.check(V) == [] and "has 13" in back.check(13)[0]
    (tmp_path / FILE_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        PairPrior.load(str(tmp_path))


@pytest.mark.parametrize("kw,msg", [
    (dict(weight=-1.0), "weight"), (dict(beta=0.0), "beta"), (dict(clip=float("nan")), "clip"),
    (dict(pool=0), "pool"), (dict(beta3=-2.0), "beta3"),
])
def test_bad_settings_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PriorSettings(**kw)


def test_bad_tables_are_refused():
    uni = torch.zeros(3, dtype=torch.long)
    empty3 = torch.zeros(0, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        PairPrior(torch.tensor([[5, 1, 1]]), empty3, uni)
    with pytest.raises(ValueError, match=">= 1"):
        PairPrior(torch.tensor([[1, 1, 0]]), empty3, uni)
    with pytest.raises(ValueError, match=r"\[n, 4\]"):
        PairPrior(torch.tensor([[1, 1, 1]]), torch.zeros(1, 3, dtype=torch.int32), uni)
    with pytest.raises(ValueError, match="outside"):
        PairPrior.from_sequences([[1, 9]], 4)


def _reference_tree(root, prev, vals, ids, budget, width, max_depth, prior):
    """Plain definition: best frontier node first over the fully expanded rescored tree."""
    nodes = [(root, -1, 0, 0.0)]  # token, parent, depth, score
    frontier = []  # (score, parent, rank, token); ties: the lower parent, then the lower rank

    def expand(i):
        tok, parent, d, s = nodes[i]
        if d >= max_depth:
            return
        grand = nodes[parent][0] if parent >= 0 else prev
        row_v, row_i = vals[d].tolist(), ids[d].tolist()
        inc = [min(0.0, v + b) for v, b in zip(row_v, prior.bonus(grand, tok, row_i))]
        best = sorted(range(len(inc)), key=lambda j: -inc[j])[:width]
        for rank, j in enumerate(best):
            frontier.append((s + inc[j], i, rank, row_i[j]))

    expand(0)
    while frontier and len(nodes) < budget:
        top = max(frontier, key=lambda f: (f[0], -f[1], -f[2]))
        frontier.remove(top)
        s, parent, _, tok = top
        nodes.append((tok, parent, nodes[parent][2] + 1, s))
        expand(len(nodes) - 1)
    return [n[0] for n in nodes], [n[1] for n in nodes], [n[3] for n in nodes]


@pytest.mark.parametrize("seed", range(24))
def test_rescored_tree_matches_the_plain_definition(seed):
    g = torch.Generator().manual_seed(100 + seed)
    D = int(torch.randint(1, 6, (), generator=g))
    k = int(torch.randint(1, V + 1, (), generator=g))
    lp = torch.log_softmax(2 * torch.randn(D, V, generator=g), -1)
    vals, ids = lp.topk(k, -1)
    budget, width = int(torch.randint(1, 30, (), generator=g)), int(torch.randint(1, 6, (), generator=g))
    depth = int(torch.randint(1, D + 1, (), generator=g))
    prev = None if seed % 4 == 0 else int(torch.randint(0, V, (), generator=g))
    heavy = seed >= 20  # weights so large that many increments cap at 0: exact score ties everywhere
    prior = _prior(seed, weight=float(torch.rand((), generator=g)) * (40 if heavy else 2),
                   weight3=float(torch.rand((), generator=g)) * (40 if heavy else 1))
    tree = build_tree_from_top(3, vals, ids, budget, width, depth, prior=prior, prev_token=prev)
    tree.validate()
    toks, parents, scores = _reference_tree(3, prev, vals, ids, budget, width, depth, prior)
    assert tree.tokens.tolist() == toks
    assert tree.parents.tolist() == parents
    assert tree.scores.tolist() == pytest.approx(scores, abs=1e-5)
    assert int(tree.depths.max()) <= depth and tree.n <= budget
    assert all(tree.scores[i] <= tree.scores[tree.parents[i]] + 1e-6 for i in range(1, tree.n))  # capped


def test_weights_zero_give_the_unprioritised_tree():
    g = torch.Generator().manual_seed(7)
    lp = torch.log_softmax(2 * torch.randn(5, V, generator=g), -1)
    vals, ids = lp.topk(7, -1)
    plain = build_tree_from_top(1, vals[:, :4], ids[:, :4], 20, 4)
    zero = build_tree_from_top(1, vals, ids, 20, 4, prior=_prior(3, weight=0.0, weight3=0.0), prev_token=2)
    for f in ("tokens", "parents", "depths", "ranks", "scores"):
        assert torch.equal(getattr(plain, f), getattr(zero, f)), f


def test_the_prior_makes_children_depend_on_the_parent():
    # depth 1 offers tokens 1 and 2; depth 2 offers 3 and 4 with equal draft scores. The answers
    # always follow 1 with 3 and 2 with 4, so each parent's best child differs.
    seqs = [[1, 3, 0, 2, 4, 0]] * 20
    prior = PairPrior.from_sequences(seqs, 6, PriorSettings(weight=1.0, weight3=0.0, beta=1.0))  # root 5: unseen
    vals = torch.log(torch.tensor([[0.5, 0.4], [0.45, 0.45]]))
    ids = torch.tensor([[1, 2], [3, 4]])
    for tree, want in ((build_tree_from_top(5, vals, ids, 7, 2, prior=prior), {1: 3, 2: 4}),
                       (build_tree_from_top(5, vals, ids, 7, 2), {1: 3, 2: 3})):
        first = {}  # parent token -> its rank-0 child
        for i in range(1, tree.n):
            if int(tree.ranks[i]) == 0 and int(tree.depths[i]) == 2:
                first[int(tree.tokens[tree.parents[i]])] = int(tree.tokens[i])
        assert first == want


def test_bad_tree_inputs_with_a_prior():
    vals = torch.tensor([[-0.1, float("nan")]])
    with pytest.raises(ValueError, match="without NaN"):
        build_tree_from_top(0, vals, torch.tensor([[1, 2]]), 3, 1, prior=_prior(0))
    with pytest.raises(ValueError, match="prev_token"):
        build_tree_from_top(0, torch.tensor([[-0.1, -2.0]]), torch.tensor([[1, 2]]), 3, 1, prior=_prior(0),
                            prev_token=-1)


# ---- loading with a head, and the server's startup check -------------------------------------

def test_server_startup_check(tmp_path):
    from sglang_jetspec.integration.pair_prior_setting import check_pair_prior, mode_from_env

    assert check_pair_prior(str(tmp_path), V, environ={}) == []  # no file
    _prior(0).save(str(tmp_path))
    assert check_pair_prior(str(tmp_path), V, environ={}) == []
    assert "has 50" in check_pair_prior(str(tmp_path), 50, environ={})[0]
    assert check_pair_prior(str(tmp_path), 50, environ={"SGLANG_JETSPEC_PAIR_PRIOR": "off"}) == []
    (tmp_path / FILE_NAME).write_bytes(b"junk")
    assert "not a readable" in check_pair_prior(str(tmp_path), V, environ={})[0]
    assert "SGLANG_JETSPEC_PAIR_PRIOR='of'" in check_pair_prior(
        str(tmp_path), V, environ={"SGLANG_JETSPEC_PAIR_PRIOR": "of"})[0]
    assert mode_from_env({}) == "on"


def test_load_head_attaches_the_prior_only_when_asked(tmp_path):
    from sglang_jetspec.core.checkpoint import load_head, save_head
    from sglang_jetspec.core.head import DraftHead
    from sglang_jetspec.core.head_config import HeadConfig

    cfg = HeadConfig.for_target(target_hidden_size=32, target_num_layers=4, vocab_size=V, num_layers=1,
                                mask_token_id=0)
    save_head(DraftHead(cfg), str(tmp_path))
    assert load_head(str(tmp_path)).pair_prior is None  # no file: plain trees
    _prior(1, weight=0.25).save(str(tmp_path))
    assert load_head(str(tmp_path)).pair_prior.settings.weight == 0.25
    assert load_head(str(tmp_path), pair_prior=False).pair_prior is None
    PairPrior.from_sequences([[1, 2]], V + 1).save(str(tmp_path))
    with pytest.raises(ValueError, match="target's vocabulary"):
        load_head(str(tmp_path))


def test_build_pair_prior_command(tmp_path, capsys):
    import json

    from launch.build_pair_prior import main
    from sglang_jetspec.core.checkpoint import save_head
    from sglang_jetspec.core.head import DraftHead
    from sglang_jetspec.core.head_config import HeadConfig

    head = tmp_path / "head"
    save_head(DraftHead(HeadConfig.for_target(target_hidden_size=32, target_num_layers=4, vocab_size=V,
                                              num_layers=1, mask_token_id=0)), str(head))
    data = tmp_path / "regen"
    data.mkdir()
    with open(data / "shard_00000.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"prompt": f"p{i}", "prompt_ids": [9, 10, 11], "output_ids": [1, 2, 3, 1, 2, i % 5],
                                "finish": "stop", "file": "x"}) + "\n")
    main(["--head", str(head), "--data", str(data), "--weight", "0.4", "--pool", "8", "--val-percent", "10"])
    out = capsys.readouterr().out
    assert "pair_prior.safetensors" in out and "held out" in out
    prior = PairPrior.load(str(head))
    assert prior.settings.weight == 0.4 and prior.settings.pool == 8
    assert prior.bonus(None, 1, [2])[0] > 0 > prior.bonus(None, 1, [3])[0]  # 1 is always followed by 2
    assert prior.bonus(10, 11, [1])[0] > prior.bonus(None, 11, [1])[0]  # the prompt's last two tokens count
    with pytest.raises(SystemExit, match="--force"):
        main(["--head", str(head), "--data", str(data)])
    with pytest.raises(SystemExit, match="pool"):
        main(["--head", str(head), "--data", str(data), "--force", "--pool", "0"])
