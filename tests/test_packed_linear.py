"""core/packed_linear.py: the packed oneDNN linear against plain products on random inputs, its
fallbacks, and a target wrapped with it against the same target without it."""

import pytest
import torch
import torch.nn.functional as F

from sglang_jetspec.core import packed_linear as pl
from sglang_jetspec.core.packed_linear import PackedWeight, cpu_linear_backend, pack_linears, packed_linear

if not pl._ops_present():  # e.g. a PyTorch build without oneDNN: the module falls back to F.linear
    pytest.skip("this PyTorch build has no oneDNN linear ops", allow_module_level=True)


def test_self_check_passes_here():
    assert pl.onednn_linear_works()


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 12, 16, 17, 40])
@pytest.mark.parametrize("out_f,in_f,bias", [(96, 64, False), (64, 160, True), (1000, 48, False)])
def test_matches_float64_product(rows, out_f, in_f, bias):
    gen = torch.Generator().manual_seed(rows * 1000 + out_f)
    w = torch.randn(out_f, in_f, generator=gen)
    b = torch.randn(out_f, generator=gen) if bias else None
    x = torch.randn(rows, in_f, generator=gen)
    exact = x.double() @ w.double().t() + (b.double() if bias else 0)
    with torch.no_grad():
        got = packed_linear(x, PackedWeight(w), b)
        plain = F.linear(x, w, b)
    assert got.dtype == torch.float32 and got.shape == (rows, out_f)
    err, plain_err = (got.double() - exact).abs().max().item(), (plain.double() - exact).abs().max().item()
    # an fp32 product of length in_f: both kernels' errors are rounding-sized, neither far off the other
    assert err < 1e-4 * in_f ** 0.5 and err < 8 * plain_err + 1e-6, (err, plain_err)


def test_row_buckets_are_few_and_tight():
    buckets = [pl.row_bucket(m) for m in range(1, 1101)]
    assert buckets[:16] == list(range(1, 17))  # decode and small verifies run exact
    assert all(m <= b <= m + m // 8 for m, b in zip(range(1, 1101), buckets))
    assert len(set(buckets)) == 65 and pl.row_bucket(17) == 18 and pl.row_bucket(1024) == 1024


def test_leading_dims_and_strided_input():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(24, 16, generator=gen)
    x = torch.randn(2, 5, 32, generator=gen)[..., ::2]  # non-contiguous [2, 5, 16]
    with torch.no_grad():
        got = packed_linear(x, PackedWeight(w))
    assert got.shape == (2, 5, 24)
    torch.testing.assert_close(got, F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_repacks_after_in_place_change_and_replacement():
    w = torch.randn(8, 6)
    x = torch.randn(3, 6)
    pw = PackedWeight(w)
    with torch.no_grad():
        first = packed_linear(x, pw)
        w.mul_(2.0)
        torch.testing.assert_close(packed_linear(x, pw), 2 * first, rtol=1e-5, atol=1e-5)
        w2 = torch.randn(8, 6)
        torch.testing.assert_close(packed_linear(x, pw, weight=w2), F.linear(x, w2), rtol=1e-5, atol=1e-5)


def test_a_released_weight_keeps_computing_from_the_packed_copy():
    w = torch.randn(8, 6)
    x = torch.randn(3, 6)
    pw = PackedWeight(w)
    pw.release()
    with torch.no_grad():
        torch.testing.assert_close(packed_linear(x, pw), F.linear(x, w), rtol=1e-5, atol=1e-5)
        assert packed_linear(torch.randn(0, 6), pw).shape == (0, 8)
        with pytest.raises(ValueError, match="5 features, weight expects 6"):
            packed_linear(torch.randn(2, 5), pw)
        with pytest.raises(RuntimeError, match="packed CPU"):
            packed_linear(x.bfloat16(), pw)


def test_autograd_and_other_dtypes_use_plain_linear():
    lin = torch.nn.Linear(6, 4)
    assert pack_linears(lin) == 1
    x = torch.randn(3, 6, requires_grad=True)
    lin(x).sum().backward()  # gradients flow: the packed path is never taken under autograd
    assert x.grad is not None and lin.weight.grad is not None
    xb = torch.randn(3, 6).bfloat16()
    with torch.no_grad():
        assert lin.bfloat16()(xb).dtype == torch.bfloat16


def test_wrong_width_and_shape_errors():
    with pytest.raises(ValueError, match="2-D"):
        PackedWeight(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="5 features, weight expects 4"):
        packed_linear(torch.randn(2, 5), PackedWeight(torch.randn(3, 4)))


def test_backend_setting(monkeypatch):
    monkeypatch.delenv(pl.ENV_VAR, raising=False)
    assert cpu_linear_backend() == "onednn"
    monkeypatch.setenv(pl.ENV_VAR, "torch")
    assert cpu_linear_backend() == "torch"
    assert cpu_linear_backend("onednn") == "onednn"  # an explicit request wins
    monkeypatch.setenv(pl.ENV_VAR, "mkl")
    with pytest.raises(ValueError, match=r"\$JETSPEC_CPU_LINEAR CPU linear backend 'mkl' is not one of onednn, torch"):
        cpu_linear_backend()
    with pytest.raises(ValueError, match="requested CPU linear backend 'fast'"):
        cpu_linear_backend("fast")


def _tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=128,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def test_target_with_packed_linears_matches_plain_target():
    from sglang_jetspec.reference.target import HFTarget

    packed = HFTarget.from_model(_tiny_llama(0))
    plain = HFTarget.from_model(_tiny_llama(0), linear_backend="torch")
    assert packed.linear_backend == "onednn" and plain.linear_backend == "torch"
    n_linear = sum(type(m) is torch.nn.Linear for m in packed.model.model.modules())
    assert n_linear == 14 and all(hasattr(m, "_jetspec_packed") for m in packed.model.model.modules()
                                  if type(m) is torch.nn.Linear)
    ids = torch.randint(0, 300, (11,), generator=torch.Generator().manual_seed(1))
    a = packed.forward(ids, packed.new_cache(), 0, layer_ids=[0, 1])
    b = plain.forward(ids, plain.new_cache(), 0, layer_ids=[0, 1])
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.features, b.features, rtol=1e-4, atol=1e-4)
    assert torch.equal(a.logits.argmax(-1), b.logits.argmax(-1))


def test_draft_vocab_subset_scores_match_the_plain_product(monkeypatch):
    from sglang_jetspec.core.draft_vocab import DraftVocab

    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(500, 32, generator=gen)
    hidden = torch.randn(2, 15, 32, generator=gen)
    vocab = DraftVocab(list(range(0, 500, 7)))
    with torch.no_grad():
        packed = vocab.subset_logprobs(hidden, weight)
        assert vocab._packed is not None
        monkeypatch.setenv(pl.ENV_VAR, "torch")
        plain = vocab.subset_logprobs(hidden, weight)
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)


def test_reference_decoder_packs_the_head_only_with_a_packed_target():
    from sglang_jetspec.core.head import DraftHead
    from sglang_jetspec.core.head_config import HeadConfig
    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
    from sglang_jetspec.reference.target import HFTarget

    for backend, packed in (("onednn", True), ("torch", False)):
        target = HFTarget.from_model(_tiny_llama(0), linear_backend=backend)
        cfg = HeadConfig.for_target(target.hidden_size, target.num_layers, target.vocab_size, num_layers=1,
                                    mask_token_id=target.vocab_size - 1, rope_theta=10000.0)
        head = DraftHead(cfg)
        ReferenceDecoder(target, head, TreeSettings(budget=4))
        linears = [m for m in head.modules() if type(m) is torch.nn.Linear]
        assert linears and all(hasattr(m, "_jetspec_packed") == packed for m in linears)
