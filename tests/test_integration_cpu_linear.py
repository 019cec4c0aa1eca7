"""integration/cpu_linear.py: SGLang's CPU linear and lm_head paths through packed oneDNN products,
only where SGLang would take its plain fp32 product; everything else passes through untouched.
(Every SGLang server the suite starts on CPU runs with it; the lossless end-to-end tests cover it.)"""

import pytest
import torch
import torch.nn.functional as F

from sglang_jetspec.core import packed_linear as pl
from sglang_jetspec.integration import cpu_linear

if not pl._ops_present():
    pytest.skip("this PyTorch build has no oneDNN linear ops", allow_module_level=True)


class _Layer(torch.nn.Module):
    def __init__(self, out_f, in_f, dtype=torch.float32):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out_f, in_f, dtype=dtype), requires_grad=False)


def _plain_apply(calls):
    def apply(self, layer, x, bias=None):
        calls.append(x.shape[0])
        return F.linear(x, layer.weight, bias)
    return apply


def test_linear_apply_packs_cpu_fp32_and_passes_the_rest():
    calls = []
    wrapped = cpu_linear.packed_linear_apply(_plain_apply(calls))
    layer = _Layer(40, 24)
    weight = layer.weight.detach().clone()
    g = torch.Generator().manual_seed(0)
    for m in (1, 3, 8, 21):
        x = torch.randn(m, 24, generator=g)
        b = torch.randn(40, generator=g)
        torch.testing.assert_close(wrapped(None, layer, x, b), F.linear(x, weight, b), rtol=1e-5, atol=1e-5)
    assert calls == [] and isinstance(layer._jetspec_packed, pl.PackedWeight)
    assert layer._jetspec_packed.released and layer.weight.numel() == 0  # the original is freed
    x3 = torch.randn(2, 3, 24, generator=g)  # [batch, seq, d] keeps its leading dims
    assert wrapped(None, layer, x3).shape == (2, 3, 40)
    x = torch.randn(2, 24, generator=g)
    with pytest.raises(RuntimeError, match="keeps only its packed CPU torch.float32 weight"):
        wrapped(None, layer, x.double())
    wrapped(None, _Layer(40, 24, torch.bfloat16), x.bfloat16())
    amx = _Layer(40, 24)
    amx.use_intel_amx_backend = True
    wrapped(None, amx, x)
    assert calls == [2, 2] and wrapped.jetspec_packed


def test_lm_head_packs_only_sglangs_plain_branch():
    calls = []

    def compute(self, hidden, lm_head, bias=None, *, out=None):
        calls.append((hidden.shape[0], out is not None))
        return torch.matmul(hidden, lm_head.weight.T)

    plain = {"yes": True}
    wrapped = cpu_linear.packed_lm_head(compute, lambda self, head: plain["yes"])
    head = _Layer(300, 16)
    x = torch.randn(3, 16)
    torch.testing.assert_close(wrapped(None, x, head), x @ head.weight.T, rtol=1e-5, atol=1e-5)
    assert calls == []
    wrapped(None, x, head, out=torch.empty(3, 300))
    plain["yes"] = False
    wrapped(None, x, head)
    assert calls == [(3, True), (3, False)]


def test_install_wraps_sglang_once_and_knows_its_plain_head():
    from sglang.srt.layers.logits_processor import LogitsProcessor
    from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod

    cpu_linear.install()
    apply, head = UnquantizedLinearMethod.apply, LogitsProcessor._compute_lm_head
    cpu_linear.install()
    assert UnquantizedLinearMethod.apply is apply and LogitsProcessor._compute_lm_head is head
    assert apply.jetspec_packed and head.jetspec_packed

    class _Proc:
        rl_on_policy_target = None

    assert cpu_linear._sglang_plain_head(_Proc(), _Layer(8, 4))
    lora = _Layer(8, 4)
    lora.set_lora, lora.apply_lora = object(), object()
    assert not cpu_linear._sglang_plain_head(_Proc(), lora)


def test_servers_opt_in_through_their_own_setting(monkeypatch):
    monkeypatch.delenv(cpu_linear.SERVER_ENV_VAR, raising=False)
    monkeypatch.setenv(pl.ENV_VAR, "onednn")  # the reference decoder's switch does not reach servers
    assert cpu_linear.server_backend() == "torch"
    monkeypatch.setenv(cpu_linear.SERVER_ENV_VAR, "onednn")
    assert cpu_linear.server_backend() == "onednn"
    monkeypatch.setenv(cpu_linear.SERVER_ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"\$SGLANG_JETSPEC_CPU_LINEAR CPU linear backend 'fast' is not one of"):
        cpu_linear.server_backend()
