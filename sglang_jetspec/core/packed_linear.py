"""fp32 linear layers on a CPU through oneDNN, with each weight packed once.

Why: PyTorch's CPU ``F.linear`` (MKL sgemm) is slow at the row counts decoding uses. Measured on
this project's 2-core AMD EPYC VM (PyTorch 2.14, fp32, the decoder linear layers of SmolLM2-135M:
one q-, one k/v-, one gate- and one down-projection shape per layer, 30 layers; median ms;
``docs/bench/cpu-linear-onednn/linear_rows_onednn.{py,txt}``):

    rows              1     2     4     8    16    32
    F.linear, 2 thr  16.6  26.3  25.1  22.2  27.8  44.8
    oneDNN,   2 thr  10.4  13.5   9.0  11.9  15.7  21.9
    F.linear, 1 thr  17.4  24.6  24.9  30.9  42.2  68.5
    oneDNN,   1 thr  11.2  10.8  12.3  14.9  19.8  31.0

One row (plain decoding) takes a matrix-vector path that runs on one core (16-17 ms with one
thread or two), and 2-16 rows (a tree verify) take kernels well below the memory roofline; the
packed oneDNN product stays near one weight read for a dozen rows. So plain decoding AND tree
verification both get faster, and a verify of ~8 nodes costs about one decode step, which is
what speculative decoding assumes.

The results are fp32 products (a different summation order than MKL's, as any change of kernel
or row count gives; errors against float64 are of the same size as ``F.linear``'s, see the
tests). Nothing here is used under autograd: when gradients are being recorded, or on another
device or dtype, the plain ``F.linear`` runs.

oneDNN keeps a compiled primitive (about 0.9 MB here) for every distinct row count it has seen, so
a server whose batches and trees take hundreds of sizes keeps growing (a probe of 3000 random
sizes in 1..1100 over four weights: 543 -> 1410 MB). Row counts above 16 are therefore padded
with zero rows up to a bucket, eight buckets per doubling (at most 1/8 extra rows; 65 buckets up
to 1100 rows), and the extra rows are dropped. Products of 1-6 rows are padded to the row count
measured fastest on this machine (core/small_rows.py: oneDNN's one-row kernel is slower than its
few-row ones on the CPUs measured here).

``JETSPEC_CPU_LINEAR=torch`` turns the packed path off for the reference decoder (``onednn``, the
default, turns it on where this PyTorch build has the oneDNN ops and they pass a self-check at
first use). SGLang servers have their own switch, ``SGLANG_JETSPEC_CPU_LINEAR``, off by default
(integration/cpu_linear.py says why).
"""

from __future__ import annotations

import logging
import os
import types
from functools import lru_cache

import torch
import torch.nn.functional as F

from sglang_jetspec.core.small_rows import rows_to_run

logger = logging.getLogger(__name__)

ENV_VAR = "JETSPEC_CPU_LINEAR"
BACKENDS = ("onednn", "torch")


def _ops_present() -> bool:
    mk = getattr(torch.ops, "mkldnn", None)
    return (
        torch.backends.mkldnn.is_available()
        and mk is not None
        and hasattr(mk, "_reorder_linear_weight")
        and hasattr(mk, "_linear_pointwise")
    )


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def _packed_product(rows: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")


@lru_cache(maxsize=1)
def onednn_linear_works() -> bool:
    """True when the oneDNN ops exist and agree with F.linear on a random product (checked once)."""
    if not _ops_present():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(37, 53, generator=gen)
        b = torch.randn(37, generator=gen)
        x = torch.randn(5, 53, generator=gen)
        with torch.no_grad():
            got = _packed_product(x, _pack(w), b)
        want = (x.double() @ w.double().t() + b.double()).float()
        return got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-4)
    except Exception as exc:  # a build without working oneDNN fp32 linear
        logger.warning("oneDNN linear unavailable (%s); using F.linear", exc)
        return False


def cpu_linear_backend(requested: str | None = None, env_var: str = ENV_VAR, default: str = "onednn") -> str:
    """The backend CPU fp32 linear layers use: ``requested``, else $``env_var``, else ``default``
    (the reference decoder: $JETSPEC_CPU_LINEAR, default onednn; SGLang servers:
    $SGLANG_JETSPEC_CPU_LINEAR, default torch, integration/cpu_linear.py).

    Raises ValueError on an unknown name; falls back to ``torch`` (with a warning) when oneDNN
    was asked for but does not work in this PyTorch build.
    """
    name = requested if requested is not None else os.environ.get(env_var, default)
    name = name.strip().lower()
    if name not in BACKENDS:
        src = "requested" if requested is not None else f"${env_var}"
        raise ValueError(f"{src} CPU linear backend {name!r} is not one of {', '.join(BACKENDS)}")
    if name == "onednn" and not onednn_linear_works():
        logger.warning("CPU linear backend onednn requested but not working here; using torch")
        return "torch"
    return name


class PackedWeight:
    """A weight [n, d] with its oneDNN-packed copy; repacks if the weight changed in place or
    was replaced (checked through the tensor's version counter and identity). After
    ``release()`` it holds the packed copy only (the caller may then free the weight)."""

    def __init__(self, weight: torch.Tensor):
        if weight.dim() != 2:
            raise ValueError(f"a packed linear weight must be 2-D [out, in], got shape {tuple(weight.shape)}")
        self._repack(weight)

    def _repack(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.version = weight._version
        self.packed = _pack(weight)
        self.out_features, self.in_features = weight.shape
        self.dtype = weight.dtype

    def release(self) -> None:
        """Stop tracking the weight: the packed copy is final from now on."""
        self.weight = None

    @property
    def released(self) -> bool:
        return self.weight is None

    def current(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if weight is None else weight
        if w is None:  # released
            return self.packed
        if w is not self.weight or w._version != self.version:
            self._repack(w)
        return self.packed


EXACT_ROWS = 16  # row counts up to this run as they are; above, padded to a bucket


def row_bucket(m: int) -> int:
    """The row count ``m`` rows are padded to: ``m`` itself up to EXACT_ROWS, else ``m`` rounded up
    to a multiple of 2**(bit_length(m) - 4) (eight buckets per doubling)."""
    if m <= EXACT_ROWS:
        return m
    step = 1 << (m.bit_length() - 4)
    return -(-m // step) * step


def packable(x: torch.Tensor, weight) -> bool:
    """Whether ``x @ weight.T`` may take the packed path: a 2-D fp32 weight, an fp32 CPU input,
    no autograd recording through either."""
    return (
        isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


def packed_linear(x: torch.Tensor, pw: PackedWeight, bias: torch.Tensor | None = None,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) for x [..., d] through ``pw`` (weight defaults to pw's own)."""
    w = pw.weight if weight is None else weight
    in_f = pw.in_features if w is None else w.shape[-1]
    if x.shape[-1] != in_f:
        raise ValueError(f"x has {x.shape[-1]} features, weight expects {in_f}")
    if w is None:  # released: only the packed product is left
        if x.device.type != "cpu" or x.dtype != pw.dtype or (torch.is_grad_enabled() and x.requires_grad):
            raise RuntimeError(f"this linear layer keeps only its packed CPU {pw.dtype} weight; got a "
                               f"{x.dtype} input on {x.device} (requires_grad={x.requires_grad})")
    elif not packable(x, w) or (bias is not None and bias.dtype != torch.float32):
        return F.linear(x, w, bias)
    out_f = pw.out_features if w is None else w.shape[0]
    lead = x.shape[:-1]
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    m = rows.shape[0]
    if m == 0:
        return x.new_zeros(*lead, out_f)
    b = row_bucket(rows_to_run(m, _pack, _packed_product))  # each leaves the other's range as it is
    if b != m:
        rows = torch.cat([rows, rows.new_zeros(b - m, rows.shape[1])])
    return _packed_product(rows, pw.current(w), bias)[:m].view(*lead, out_f)


def _packed_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return packed_linear(x, self._jetspec_packed, self.bias, self.weight)


def pack_linears(module: torch.nn.Module) -> int:
    """Route every CPU fp32 ``nn.Linear`` inside ``module`` through a packed oneDNN product.

    WARNING: in place (each layer's ``forward`` is replaced; its weight stays as it is, and the
    packed copy costs as much memory again). Returns how many layers were packed.
    """
    n = 0
    for mod in module.modules():
        if type(mod) is not torch.nn.Linear or hasattr(mod, "_jetspec_packed"):
            continue
        if mod.weight.device.type != "cpu" or mod.weight.dtype != torch.float32:
            continue
        mod._jetspec_packed = PackedWeight(mod.weight)
        mod.forward = types.MethodType(_packed_forward, mod)
        n += 1
    return n
