"""SGLang on CPU: fp32 linear layers and the lm_head through packed oneDNN products.

SGLang's CPU path computes an unquantized fp32 linear layer with ``F.linear`` and the lm_head with
``torch.matmul(hidden, W.T)``; on CPU both are slow at the row counts serving uses (one row per
decoding request runs a single-core matrix-vector path, a few rows run kernels far below the
memory bandwidth; measurements in core/packed_linear.py). With this installed, every CPU fp32
``UnquantizedLinearMethod.apply`` and plain lm_head goes through core/packed_linear.py, with the
packed copy of each weight made at its first use (after SGLang has loaded the weights) and kept
on the layer. Every server of a run gets it alike, with and without speculation.

Anything else (another dtype or device, intel-AMX packed layers, LoRA, quantized heads, an
``out`` buffer) takes SGLang's own path unchanged. A linear layer's own weight is freed once packed
(release_weight), so SGLang's weight-update endpoints cannot reload such a server in place (they
fail on the emptied parameter rather than leave a stale packed copy); the lm_head keeps its weight
(it is usually the embedding too).

Opt-in: ``SGLANG_JETSPEC_CPU_LINEAR=onednn`` (default ``torch``: SGLang's code untouched). Measured
gains are large (README, "Serving with SGLang"), but each scheduler then holds 0.13-0.22 GB more
(SmolLM2, 2.47 / 2.67 GB resident for a plain / JETSPEC scheduler against 2.34 / 2.45 with
F.linear; docs/bench/cpu-smollm2-server-onednn/server_rss.txt: the lm_head's packed copy is 0.11
GB, the rest oneDNN's primitives and scratch), and the test suite's concurrent servers ran a 24 GB
machine out of memory with it on everywhere; so it is a choice, not a default.
"""

from __future__ import annotations

import torch

from sglang_jetspec.core.packed_linear import PackedWeight, cpu_linear_backend, packable, packed_linear

_ATTR = "_jetspec_packed"
SERVER_ENV_VAR = "SGLANG_JETSPEC_CPU_LINEAR"


def server_backend() -> str:
    """``onednn`` or ``torch`` for this server's CPU linear layers (and its draft head's)."""
    return cpu_linear_backend(env_var=SERVER_ENV_VAR, default="torch")


def _packed_of(layer) -> PackedWeight:
    pw = getattr(layer, _ATTR, None)
    if pw is None:
        pw = PackedWeight(layer.weight)
        setattr(layer, _ATTR, pw)
    return pw


def release_weight(layer, pw: PackedWeight) -> None:
    """Free a linear layer's own weight once its packed copy exists (saves the model's linear
    weights once over, ~0.4 GB per SmolLM2 scheduler: two copies of every server's weights pushed
    the test suite's servers out of memory). Only this module's apply reads them afterwards."""
    pw.release()
    layer.weight.data = torch.empty(0, dtype=layer.weight.dtype)


def packed_linear_apply(apply):
    """Wrap UnquantizedLinearMethod.apply(self, layer, x, bias=None). The first CPU fp32 call
    packs the layer's weight and frees the original (release_weight)."""

    def wrapped(self, layer, x, bias=None):
        pw = getattr(layer, _ATTR, None)
        if pw is not None and pw.released:
            return packed_linear(x, pw, bias)  # raises on anything but a CPU fp32 input
        w = getattr(layer, "weight", None)
        if not packable(x, w) or getattr(layer, "use_intel_amx_backend", False):
            return apply(self, layer, x, bias)
        pw = _packed_of(layer)
        out = packed_linear(x, pw, bias, weight=w)
        release_weight(layer, pw)
        return out

    wrapped.jetspec_packed = True
    wrapped.__wrapped__ = apply
    return wrapped


def packed_lm_head(compute, plain_head):
    """Wrap LogitsProcessor._compute_lm_head(self, hidden [m, d], lm_head, bias, out=...).
    ``plain_head(self, lm_head)`` says whether SGLang would take its plain ``hidden @ W.T`` branch."""

    def wrapped(self, hidden_states, lm_head, embedding_bias=None, *, out=None):
        w = getattr(lm_head, "weight", None)
        if out is not None or hidden_states.dim() != 2 or not packable(hidden_states, w) or not plain_head(self, lm_head):
            return compute(self, hidden_states, lm_head, embedding_bias, out=out)
        return packed_linear(hidden_states, _packed_of(lm_head), weight=w)

    wrapped.jetspec_packed = True
    wrapped.jetspec_padded = getattr(compute, "jetspec_padded", False)  # cpu_support item 5 stays applied once
    wrapped.__wrapped__ = compute
    return wrapped


def _sglang_plain_head(self, lm_head) -> bool:
    from sglang.srt.layers import logits_processor as lp

    quant = getattr(lm_head, "quant_method", None)
    return (
        not (hasattr(lm_head, "set_lora") and hasattr(lm_head, "apply_lora"))
        and not lp.should_apply_lm_head_quant_method(lm_head, quant)
        and not getattr(lm_head, "use_intel_amx_backend", False)
        and getattr(self, "rl_on_policy_target", None) is None
    )


def install() -> bool:
    """Patch SGLang's CPU linear and lm_head paths (idempotent). Returns whether they are patched."""
    from sglang.srt.layers.logits_processor import LogitsProcessor
    from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod

    if not getattr(UnquantizedLinearMethod.apply, "jetspec_packed", False):
        UnquantizedLinearMethod.apply = packed_linear_apply(UnquantizedLinearMethod.apply)
    if not getattr(LogitsProcessor._compute_lm_head, "jetspec_packed", False):
        LogitsProcessor._compute_lm_head = packed_lm_head(LogitsProcessor._compute_lm_head, _sglang_plain_head)
    return True
