"""The pair-law chi-square helper of the server sampling tests: it accepts exact samples of the
law it computes and rejects samples of another law."""

from types import SimpleNamespace

import pytest
import torch
from pair_law import assert_pairs_follow, exact_pair_law, exact_sequence_law

V = 6


class TableModel:
    """Logits of the next token depend on the last token only (a fixed random table)."""

    def __init__(self, seed: int):
        self.table = torch.randn(V, V, generator=torch.Generator().manual_seed(seed)) * 1.5

    def __call__(self, ids: torch.Tensor):
        return SimpleNamespace(logits=self.table[ids])  # [b, t, V]


def _sample_pairs(model, ids, n, seed):
    g = torch.Generator().manual_seed(seed)
    p1 = torch.softmax(model.table[ids[-1]].double(), -1)
    out = []
    for _ in range(n):
        t1 = int(torch.multinomial(p1, 1, generator=g))
        t2 = int(torch.multinomial(torch.softmax(model.table[t1].double(), -1), 1, generator=g))
        out.append((t1, t2))
    return out


def test_exact_samples_pass_and_another_law_fails():
    model, ids = TableModel(0), [1, 2]
    _, probs = exact_pair_law(model, ids, lambda logits: torch.softmax(logits, -1), top=V)
    assert abs(sum(probs.values()) - 1.0) < 1e-9
    assert_pairs_follow(_sample_pairs(model, ids, 2000, 1), probs, "exact")
    with pytest.raises(AssertionError):
        assert_pairs_follow(_sample_pairs(TableModel(5), ids, 2000, 1), probs, "other law")


def test_sequence_law_of_two_equals_the_pair_law_and_triples_sum_to_one():
    model, ids = TableModel(0), [1, 2]
    soft = lambda logits: torch.softmax(logits, -1)  # noqa: E731
    _, pairs = exact_pair_law(model, ids, soft, top=V)
    seq = exact_sequence_law(model, ids, soft, 2, top=V)
    assert seq.keys() == pairs.keys()
    assert all(abs(seq[k] - pairs[k]) < 1e-12 for k in seq)
    triples = exact_sequence_law(model, ids, soft, 3, top=V)
    assert len(triples) == V ** 3 and abs(sum(triples.values()) - 1.0) < 1e-9
    t = (3, 0, 4)
    p = [torch.softmax(model.table[a].double(), -1) for a in (ids[-1], t[0], t[1])]
    assert abs(triples[t] - float(p[0][t[0]] * p[1][t[1]] * p[2][t[2]])) < 1e-12
