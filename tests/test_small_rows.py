"""core/small_rows.py: the padding table, its switch, and that padding leaves every row's numbers alone."""

import pytest
import torch

from sglang_jetspec.core import small_rows
from sglang_jetspec.core.packed_linear import PackedWeight, onednn_linear_works, packed_linear

needs_onednn = pytest.mark.skipif(not onednn_linear_works(), reason="this PyTorch build has no working oneDNN linear")


def test_pad_table_takes_the_fastest_count_not_below_m_and_never_one():
    seconds = {1: 3.0, 2: 5.0, 3: 2.5, 4: 2.4, 5: 2.6, 6: 2.7}
    assert small_rows.pad_table(seconds) == {1: 4, 2: 4, 3: 4, 4: 4, 5: 5, 6: 6}
    # one row fastest of all: still padded, to the fastest of 2..6
    assert small_rows.pad_table({1: 1.0, 2: 2.0, 3: 1.9, 4: 2.2, 5: 2.3, 6: 2.4})[1] == 3


def test_switch_off_fixed_and_bad_values(monkeypatch):
    calls = []
    pack = lambda w: calls.append(w) or w  # noqa: E731 - must not be reached without "auto"
    monkeypatch.setenv(small_rows.ENV_VAR, "off")
    assert [small_rows.rows_to_run(m, pack, None) for m in range(1, 8)] == [1, 2, 3, 4, 5, 6, 7]
    monkeypatch.setenv(small_rows.ENV_VAR, "3")
    assert [small_rows.rows_to_run(m, pack, None) for m in range(1, 8)] == [3, 3, 3, 4, 5, 6, 7]
    assert calls == []
    for bad in ("1", "7", "fast"):
        monkeypatch.setenv(small_rows.ENV_VAR, bad)
        with pytest.raises(ValueError, match=rf"JETSPEC_CPU_SMALL_ROWS={bad!r}: expected auto, off or a row count 2..6"):
            small_rows.rows_to_run(1, pack, None)


@needs_onednn
def test_measurement_covers_every_small_count():
    from sglang_jetspec.core.packed_linear import _pack, _packed_product

    seconds = small_rows.measure_small_rows(_pack, _packed_product, weights=2, rounds=1)
    assert sorted(seconds) == list(range(1, small_rows.MAX_SMALL + 1))
    assert all(s > 0 for s in seconds.values())


@needs_onednn
@pytest.mark.parametrize("setting", ["auto", "2", "5"])
@pytest.mark.parametrize("out_f, in_f", [(576, 576), (576, 1536), (1536, 576), (37, 53)])
def test_a_row_gives_the_same_numbers_whatever_rows_come_with_it(monkeypatch, setting, out_f, in_f):
    monkeypatch.setenv(small_rows.ENV_VAR, setting)
    gen = torch.Generator().manual_seed(out_f + in_f)
    w = torch.randn(out_f, in_f, generator=gen)
    x = torch.randn(9, in_f, generator=gen)
    pw = PackedWeight(w)
    with torch.no_grad():
        alone = packed_linear(x[:1], pw)
        for m in range(2, 10):  # padded small counts and counts run as they are
            assert torch.equal(packed_linear(x[:m], pw)[:1], alone), m
        want = (x[:1].double() @ w.double().t()).float()
    assert torch.allclose(alone, want, rtol=1e-5, atol=1e-4)
