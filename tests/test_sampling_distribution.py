"""Losslessness of the sampling acceptance rules, checked against the exact target joint.

A synthetic target over V = 5 tokens whose next-token distribution depends on the whole prefix
(logits from a seeded hash of the prefix, then temperature / top-k / top-p through
target_distribution, so some tokens have probability exactly 0), and a synthetic drafter giving
one q row per depth. Each trial decodes rounds (draft tree -> target rows for every node from its
path -> accept -> append the committed tokens) until L tokens are committed; the empirical joint
of those L tokens must match the exact autoregressive target joint.

Drafters (one q row per depth, conditioned on the committed context but not on the branch, like
the JetSpec head): "skewed" prefers the tokens the target likes least, "close" is 0.85 p + 0.15
uniform along the target's own argmax trunk, and "full width" drafts every token at the root.
rrs runs on resample_children trees, walk on the deterministic build_tree tree.

Statistics: Pearson chi-square goodness of fit over the cells with nonzero target probability
(cells expecting < 5 counts pooled), plus an exact check that zero-probability cells stay empty.
A correct rule fails a check with probability alpha = 1e-3 per test on a random seed (9 such
checks here, so <= 1% family-wise); the seeds are fixed, so the outcome is deterministic. The
negative controls (deliberately lossy rules, 2k trials) must FAIL the same check, which shows the
test has the power to catch a biased rule, including the subtle "no residual" bug.

Also here: rrs_pick on one sibling group in its degenerate cases, and target_distribution against
hand-computed tables and against SGLang's own pytorch-backend filter.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from sglang_jetspec.core import acceptance
from sglang_jetspec.core.acceptance import (
    AcceptResult,
    accept_sampling_rrs,
    accept_sampling_walk,
    rrs_pick,
)
from sglang_jetspec.core.sampling import draft_distribution, target_distribution
from sglang_jetspec.core.pair_prior import PairPrior, PriorSettings
from sglang_jetspec.core.tree import DraftTree, build_tree, build_tree_from_top, resample_children

V = 5
PROMPT = (1,)
ALPHA = 1e-3
TRIALS = 15_000


# ---------------------------------------------------------------------------- synthetic target
class SyntheticTarget:
    """p(next | prefix): logits from a crc32 of the prefix, filtered like SGLang would."""

    def __init__(self, temperature: float = 1.0, top_k: int = 4, top_p: float = 0.9):
        self.cfg = (temperature, top_k, top_p)
        self._rows: dict[tuple[int, ...], torch.Tensor] = {}

    def logits(self, prefix: tuple[int, ...]) -> torch.Tensor:  # [V]
        seed = zlib.crc32(bytes(prefix))
        return torch.randn(V, generator=torch.Generator().manual_seed(seed))

    def row(self, prefix: tuple[int, ...]) -> torch.Tensor:  # [V] fp32
        r = self._rows.get(prefix)
        if r is None:
            t, k, p = self.cfg
            r = self._rows[prefix] = target_distribution(self.logits(prefix)[None], t, k, p)[0]
        return r

    def joint(self, length: int) -> np.ndarray:  # [V**length] float64, lexicographic cells
        out = np.zeros(V**length)
        for cell, seq in enumerate(itertools.product(range(V), repeat=length)):
            prob = 1.0
            for t in range(length):
                row = self.row(PROMPT + seq[:t]).double()
                prob *= float(row[seq[t]] / row.sum())
            out[cell] = prob
        return out

    def trunk(self, context: tuple[int, ...], depth: int) -> list[tuple[int, ...]]:
        """The target's own argmax continuation: contexts for depths 1..depth."""
        out, ctx = [], context
        for _ in range(depth):
            out.append(ctx)
            ctx = ctx + (int(self.row(ctx).argmax()),)
        return out


def drafter(target: SyntheticTarget, kind: str, context: tuple[int, ...], depth: int) -> torch.Tensor:
    """[depth, V] q rows, full support, conditioned on the context but not on the branch."""
    ctxs = target.trunk(context, depth)
    if kind == "skewed":  # prefers the tokens the target likes least
        return draft_distribution(torch.stack([-target.logits(c) for c in ctxs]), 0.7)
    if kind == "close":
        return 0.85 * torch.stack([target.row(c) for c in ctxs]) + 0.15 / V
    raise ValueError(kind)


# ---------------------------------------------------------------------------- simulation
@dataclass(frozen=True)
class Case:
    drafter: str
    budget: int
    width: int
    depth: int
    length: int  # L committed tokens compared against the exact joint
    prior: bool = False  # shape the trees with an n-gram prior (core/pair_prior.py)


# small trees keep the file fast; they still hold 3-sibling groups and 2-level paths
SKEWED = Case("skewed", budget=7, width=3, depth=2, length=2)
CLOSE = Case("close", budget=7, width=3, depth=2, length=3)
FULL = Case("skewed", budget=1 + V, width=V, depth=1, length=2)  # the root drafts every token
# the prior picks each node's children by its path's tokens: the tree's shape then varies with the
# drafted tokens, which must still leave both rules lossless (the shape is fixed before any draw)
PRIORED = Case("close", budget=7, width=2, depth=2, length=3, prior=True)


def _prior() -> PairPrior:
    """Counts that favour a different successor per token, so trees differ by branch."""
    seqs = [[a, (2 * a + 1) % V, (3 * a + 2) % V] for a in range(V)] * 5 + [[4, 0, 1, 2, 3]] * 3
    return PairPrior.from_sequences(seqs, V, PriorSettings(weight=1.0, weight3=0.5, beta=1.0, beta3=1.0, pool=V))


def first_child_rule(tree: DraftTree, target_probs: torch.Tensor, generator) -> AcceptResult:
    """LOSSY on purpose: always accept the rank-0 child, bonus sampled at the leaf."""
    kids, toks = tree.children(), tree.tokens.tolist()
    path = [0]
    while kids[path[-1]]:
        path.append(kids[path[-1]][0])
    bonus = int(torch.multinomial(target_probs[path[-1]], 1, generator=generator))
    return AcceptResult(path, [toks[i] for i in path[1:]] + [bonus], bonus)


def simulate(target: SyntheticTarget, case: Case, rule: str, trials: int, seed: int):
    """Counts of the first `case.length` committed tokens, and mean accepted drafts per round.

    The third value: mean accepted drafts per round of the walk rule run on the SAME trees and rows
    (its own generator, its result discarded), a paired comparison for the rrs runs.
    """
    gen, side_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    side = 0
    per_context: dict[tuple[int, ...], tuple[torch.Tensor, DraftTree, list[int]]] = {}
    counts = np.zeros(V**case.length, dtype=np.int64)
    prior = _prior() if case.prior else None
    rounds = drafts = 0
    for _ in range(trials):
        context = PROMPT
        while len(context) - len(PROMPT) < case.length:
            if context not in per_context:
                q = drafter(target, case.drafter, context, case.depth)  # [D, V]
                if case.prior:
                    vals, ids = q.log().topk(V, -1)
                    tree = build_tree_from_top(context[-1], vals, ids, case.budget, case.width, case.depth,
                                               prior=prior, prev_token=context[-2] if len(context) > 1 else None)
                else:
                    tree = build_tree(context[-1], q.log(), case.budget, case.width, case.depth)
                per_context[context] = (q, tree, tree.parents.tolist())
            q, tree, parents = per_context[context]
            if rule not in ("walk", "rrs_on_top_w_tree"):  # walk runs on the deterministic tree
                tree = resample_children(tree, q, gen)
            toks = tree.tokens.tolist()
            prefixes = [context]
            for i in range(1, tree.n):
                prefixes.append(prefixes[parents[i]] + (toks[i],))
            rows = torch.stack([target.row(p) for p in prefixes])  # [n, V]
            if rule == "walk":
                res = accept_sampling_walk(tree, rows, gen)
            elif rule == "rrs":
                res = accept_sampling_rrs(tree, rows, q, gen)
                side += accept_sampling_walk(tree, rows, side_gen).num_accepted_drafts
            elif rule == "rrs_on_top_w_tree":  # LOSSY: the drafts are not samples of q
                res = accept_sampling_rrs(tree, rows, q, gen)
            elif rule == "first_child":
                res = first_child_rule(tree, rows, gen)
            else:
                raise ValueError(rule)
            context += tuple(res.tokens)
            rounds += 1
            drafts += res.num_accepted_drafts
        seq = context[len(PROMPT) : len(PROMPT) + case.length]
        counts[int(np.ravel_multi_index(seq, (V,) * case.length))] += 1
    return counts, drafts / rounds, side / rounds


def goodness_of_fit(counts: np.ndarray, probs: np.ndarray) -> float:
    """p-value of the chi-square test; 0.0 if any zero-probability cell was observed."""
    if counts[probs == 0].sum() > 0:
        return 0.0
    n = counts.sum()
    obs, exp = counts[probs > 0].astype(float), probs[probs > 0] * n
    small = exp < 5
    if small.any():  # pool sparse cells so the chi-square approximation holds
        obs = np.append(obs[~small], obs[small].sum())
        exp = np.append(exp[~small], exp[small].sum())
    exp *= obs.sum() / exp.sum()
    return float(chisquare(obs, exp).pvalue)


# ---------------------------------------------------------------------------- end-to-end joint
@pytest.fixture(scope="module")
def target() -> SyntheticTarget:
    return SyntheticTarget()


@pytest.mark.parametrize(
    "name, case, rule, seed",
    [
        ("rrs-skewed", SKEWED, "rrs", 11),
        ("rrs-close", CLOSE, "rrs", 12),
        ("rrs-full-width", FULL, "rrs", 13),
        ("walk-skewed", SKEWED, "walk", 14),
        ("walk-close", CLOSE, "walk", 15),
        ("rrs-prior", PRIORED, "rrs", 16),
        ("walk-prior", PRIORED, "walk", 17),
    ],
)
def test_lossless_joint(target, name, case, rule, seed):
    probs = target.joint(case.length)
    assert (probs == 0).any(), "the synthetic target should have zero-probability cells"
    counts, mean_drafts, paired_walk = simulate(target, case, rule, TRIALS, seed)
    pvalue = goodness_of_fit(counts, probs)
    paired = f", walk on the same trees {paired_walk:.3f}" if rule == "rrs" else ""
    print(f"\n{name}: p = {pvalue:.3f}, mean accepted drafts per round {mean_drafts:.3f}{paired}")
    assert pvalue > ALPHA, f"{name}: first {case.length} tokens differ from the target joint, p = {pvalue:.2e}"
    if rule == "rrs" and case.drafter == "close":  # large, deterministic gap (about 1.82 vs 1.32)
        assert mean_drafts > paired_walk


def lossy_rrs_pick_without_residual(p, q, drafts, generator):
    """The classic bug: after a rejection keep sampling from p instead of (p - q)^+."""
    p, q = p.double() / p.sum(), q.double() / q.sum()
    for x in drafts:
        u = float(torch.rand((), dtype=torch.float64, generator=generator))
        if u * float(q[x]) < float(p[x]):
            return x
        q = q.clone()
        q[x] = 0.0
        q = q / q.sum()
    return int(torch.multinomial(p, 1, generator=generator))


@pytest.mark.parametrize("lossy", ["first_child", "no_residual", "rrs_on_top_w_tree"])
def test_negative_controls_fail(target, monkeypatch, lossy):
    """Deliberately lossy rules must FAIL the same test, with far fewer trials."""
    case = SKEWED if lossy == "first_child" else CLOSE
    rule = lossy
    if lossy == "no_residual":
        monkeypatch.setattr(acceptance, "rrs_pick", lossy_rrs_pick_without_residual)
        rule = "rrs"
    counts, _, _ = simulate(target, case, rule, 2_000, 17)
    pvalue = goodness_of_fit(counts, target.joint(case.length))
    print(f"\nnegative control {lossy}: p = {pvalue:.2e}")
    assert pvalue < ALPHA, f"the lossy rule {lossy} passed the losslessness test, p = {pvalue:.2e}"


# ---------------------------------------------------------------------------- one sibling group
def draws_without_replacement(q: torch.Tensor, k: int, generator) -> list[int]:
    """Independent of tree.py: torch.multinomial without replacement, in draw order."""
    return torch.multinomial(q, k, replacement=False, generator=generator).tolist()


@pytest.mark.parametrize(
    "p, q, k, fixed",
    [
        # p == q: every rejection has probability 0 (the Z = 0 branch)
        ([0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1], 2, []),
        # the drafts exhaust q's support; p has mass outside it, reachable only via the residual
        ([0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.0, 0.0], 2, []),
        # every token drafted (k = V), p with a zero
        ([0.0, 0.2, 0.3, 0.5], [0.7, 0.1, 0.1, 0.1], 4, []),
        # a draft with q(x) = 0 appended after the real draws: must be ignored, not accepted
        ([0.5, 0.3, 0.2, 0.0], [0.0, 0.0, 0.5, 0.5], 1, [0]),
    ],
)
def test_rrs_pick_returns_p(p, q, k, fixed):
    p, q = torch.tensor(p), torch.tensor(q)
    gen = torch.Generator().manual_seed(21)
    counts = np.zeros(len(p), dtype=np.int64)
    for _ in range(4_000):
        drafts = draws_without_replacement(q, k, gen) + fixed
        counts[rrs_pick(p, q, drafts, gen)] += 1
    pvalue = goodness_of_fit(counts, p.double().numpy())
    assert pvalue > ALPHA, f"rrs_pick output {counts.tolist()} does not follow p {p.tolist()}: {pvalue:.2e}"


# ---------------------------------------------------------------------------- target_distribution
LOG_P = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, [0.5, 0.3, 0.15, 0.05]),
        ({"top_k": 3}, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
        ({"top_p": 0.7}, [0.625, 0.375, 0.0, 0.0]),
        ({"min_p": 0.2}, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
        # SGLang's joint top-k/top-p: top-p uses the UNFILTERED mass above a token (0.5 <= 0.6, kept);
        # a sequential filter would renormalise to [0.625, 0.375] first and drop the 2nd token
        ({"top_k": 2, "top_p": 0.6}, [0.625, 0.375, 0.0, 0.0]),
        ({"top_k": 1}, [1.0, 0.0, 0.0, 0.0]),
    ],
)
def test_target_distribution_filters(kwargs, expected):
    got = target_distribution(LOG_P[None], 1.0, **kwargs)[0]
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-6, rtol=0)


def test_target_distribution_temperature_and_ties():
    hot = target_distribution(LOG_P[None], 2.0)[0]  # softmax(log p / 2) is proportional to sqrt(p)
    torch.testing.assert_close(hot, LOG_P.exp().sqrt() / LOG_P.exp().sqrt().sum())
    tied = target_distribution(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), 1.0, top_k=2)[0]
    torch.testing.assert_close(tied, torch.tensor([0.5, 0.5, 0.0, 0.0]))  # stable: lowest ids win
    cold = torch.tensor([[0.25, 0.09, 0.0225, 0.0025]]) / 0.365  # softmax(log p / 0.5) is p^2 / sum
    torch.testing.assert_close(draft_distribution(LOG_P[None], 0.5), cold)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "temperature 0.0"),
        ({"temperature": float("nan")}, "temperature nan"),
        ({"top_k": 0}, "top_k 0"),
        ({"top_p": 0.0}, "top_p 0.0"),
        ({"top_p": 1.5}, "top_p 1.5"),
        ({"min_p": -0.1}, "min_p -0.1"),
    ],
)
def test_target_distribution_rejects_bad_parameters(kwargs, message):
    kwargs = {"temperature": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        target_distribution(LOG_P[None], **kwargs)


def test_distributions_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\[n, V\]"):
        target_distribution(LOG_P, 1.0)
    with pytest.raises(ValueError, match="temperature -1"):
        draft_distribution(LOG_P[None], -1)


def _sglang_torch_filter():
    """SGLang's own pytorch-backend filter, compiled from the installed source without importing
    sglang (that import takes ~15 s); None when SGLang is not installed."""
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "srt" / "layers" / "sampler.py"
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == SGLANG_FILTER)
    namespace = {"torch": torch, "Optional": Optional}
    exec(compile(ast.Module([fn], []), str(path), "exec"), namespace)
    return namespace[SGLANG_FILTER]


SGLANG_FILTER = "top_k_top_p_min_p_sampling_from_probs_torch"


@pytest.mark.parametrize(
    "temperature, top_k, top_p, min_p",
    [(0.7, -1, 1.0, 0.0), (1.0, 20, 1.0, 0.0), (1.3, -1, 0.8, 0.0), (0.6, 40, 0.9, 0.05), (1.0, 7, 0.5, 0.2)],
)
def test_target_distribution_matches_sglang_sampler(temperature, top_k, top_p, min_p):
    sglang_filter = _sglang_torch_filter()
    if sglang_filter is None:
        pytest.skip("sglang is not installed")
    logits = torch.randn(6, 64, generator=torch.Generator().manual_seed(5)) * 3  # no ties
    ours = target_distribution(logits, temperature, top_k, top_p, min_p)
    probs = torch.softmax(logits / temperature, dim=-1)  # SGLang: logits.div_(T), softmax
    n = logits.shape[0]
    _, filtered, idx, _ = sglang_filter(
        probs.clone(),
        torch.full((n,), top_k if top_k != -1 else 1 << 30),
        torch.full((n,), top_p),
        torch.full((n,), min_p),
        min_p > 0,
        None,
        torch.zeros(n, dtype=torch.long),
        return_filtered_probs=True,
    )
    theirs = torch.zeros_like(probs).scatter_(1, idx.long(), filtered)
    theirs = theirs / theirs.sum(-1, keepdim=True)
    torch.testing.assert_close(ours, theirs)


def test_the_prior_case_reshapes_trees(target):
    """PRIORED is only a test of prior-shaped trees if the prior changes them."""
    differ = 0
    for context in [PROMPT + (a,) for a in range(V)]:
        q = drafter(target, PRIORED.drafter, context, PRIORED.depth)
        vals, ids = q.log().topk(V, -1)
        shaped = build_tree_from_top(context[-1], vals, ids, PRIORED.budget, PRIORED.width, PRIORED.depth,
                                     prior=_prior(), prev_token=context[-2])
        plain = build_tree(context[-1], q.log(), PRIORED.budget, PRIORED.width, PRIORED.depth)
        differ += shaped.tokens.tolist() != plain.tokens.tolist()
    assert differ >= 2
