"""core/row_linear.py: the same values as F.linear, for any row count and strided inputs."""

import pytest
import torch
import torch.nn.functional as F

from sglang_jetspec.core.row_linear import row_linear


@pytest.mark.parametrize("lead", [(1,), (2,), (3,), (4,), (5,), (2, 1), (1, 3), (4, 3), (16, 2)])
def test_row_linear_matches_f_linear(lead):
    g = torch.Generator().manual_seed(sum(lead))
    w = torch.randn(300, 24, generator=g)
    x = torch.randn(*lead, 24, generator=g)
    got = row_linear(x, w)
    assert got.shape == (*lead, 300)
    torch.testing.assert_close(got, F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_strided_rows_sliced_out_of_a_block():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(200, 16, generator=g)
    block = torch.randn(5, 4, 16, generator=g)
    x = block[:, 1:3]  # the drafter's rows: not contiguous
    assert not x.is_contiguous()
    torch.testing.assert_close(row_linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_feature_mismatch_is_named():
    with pytest.raises(ValueError, match="x has 8 features, weight expects 16"):
        row_linear(torch.zeros(2, 8), torch.zeros(4, 16))
