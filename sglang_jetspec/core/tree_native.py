"""The compiled fast paths of the draft-tree builders (`tree_native.cpp`) and of expert-aware
scheduling's greedy (`expert_greedy.cpp`), one library loaded by ctypes.

Why: the server builds every request's tree on the host each round. With the n-gram prior every
opened node scores its row's whole candidate pool under its own path, about 20 us of Python per
node on this CPU (0.6-1 ms a budget-32 tree), so a GPU batch of 32 would spend ~25-35 ms a round
in it; the plain best-first tree (no prior: the published heads) costs ~0.1 ms of Python a
budget-32 tree, ~3 ms a round for a batch of 32. The same algorithms in C++ take a fraction of
that (`python -m launch.bench_tree_build`, docs/bench/cpu-tree-build).

The Python builders (core/tree.py `_best_first`, `_best_first_rescored`) and the Python greedy
(core/expert_aware_tree.py `_greedy_python`) stay the reference: the C++ repeats their float64
operations in the same order, their sorts, pop orders and argmax ties, and tests compare the
results on random inputs. The library is compiled on first use with the system C++
compiler ($CXX, else c++ / g++; a few seconds, no Python or torch headers) into the model cache
(`$JETSPEC_CACHE_DIR/native/`), named by a hash of the source and flags. Without a compiler, or
with SGLANG_JETSPEC_NATIVE_TREE=off, `library()` returns None and the Python code runs (a
warning says so once).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from .pair_prior import PairPrior

logger = logging.getLogger(__name__)

ENV = "SGLANG_JETSPEC_NATIVE_TREE"
_SOURCES = [Path(__file__).with_name(name) for name in ("tree_native.cpp", "expert_greedy.cpp")]
_FLAGS = ["-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off"]
_state: dict = {}  # "lib": the loaded library or None, once tried


def _cache_dir() -> Path:
    from sglang_jetspec.model_store import cache_dir

    return cache_dir() / "native"


def _compile(compiler: str) -> Path:
    source = b"".join(src.read_bytes() for src in _SOURCES)
    tag = hashlib.sha256(source + " ".join([compiler, *_FLAGS]).encode()).hexdigest()[:16]
    out = _cache_dir() / f"jetspec_tree_{tag}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)  # concurrent builders each write their own
    os.close(fd)
    try:
        done = subprocess.run([compiler, *_FLAGS, *map(str, _SOURCES), "-o", tmp], capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        os.replace(tmp, out)  # atomic: a reader sees the whole library or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    i64, p = ctypes.c_int64, ctypes.c_void_p
    lib.jetspec_prior_new.restype = p
    lib.jetspec_prior_new.argtypes = [i64, ctypes.c_int32, ctypes.c_int32] + [p, p, i64] * 4
    lib.jetspec_prior_free.restype = None
    lib.jetspec_prior_free.argtypes = [p]
    lib.jetspec_build_trees.restype = None
    lib.jetspec_build_trees.argtypes = [p, i64, i64, i64] + [p] * 7 + [i64] + [p] * 6
    lib.jetspec_build_plain_trees.restype = None
    lib.jetspec_build_plain_trees.argtypes = [i64, i64, i64] + [p] * 6 + [i64] + [p] * 6
    f64 = ctypes.c_double
    lib.jetspec_expert_greedy.restype = i64
    lib.jetspec_expert_greedy.argtypes = [i64] * 5 + [p] * 5 + [f64] * 4 + [ctypes.c_int32, i64, f64, f64, p, p]
    return lib


def setting(environ=None) -> str:
    """SGLANG_JETSPEC_NATIVE_TREE: on (default) or off; ValueError naming any other value."""
    value = (os.environ if environ is None else environ).get(ENV, "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"{ENV}={value!r} must be one of ['on', 'off']")
    return value


def library() -> ctypes.CDLL | None:
    """The compiled builder, or None when it is switched off or cannot be built."""
    if "lib" in _state:
        return _state["lib"]
    lib = None
    if setting() == "on":
        compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
        if compiler is None:
            logger.warning("no C++ compiler found ($CXX, c++, g++): draft trees are built in Python "
                           "(with the n-gram prior about 20 us a node)")
        else:
            try:
                lib = _load(_compile(compiler))
            except Exception as e:  # a broken toolchain must not stop decoding: the reference builds the trees
                logger.warning("the native tree builder could not be built (%s); trees are built in Python", e)
    _state["lib"] = lib
    return lib


class _NativePrior:
    """A PairPrior's lookup tables copied into the library (freed with this object)."""

    def __init__(self, lib: ctypes.CDLL, prior: "PairPrior"):
        self._lib = lib
        tables = prior.flat_tables()  # keep the arrays alive while the library copies them
        args = []
        for keys, vals in tables:
            args += [keys.data_ptr(), vals.data_ptr(), int(keys.numel())]
        s = prior.settings
        self.handle = lib.jetspec_prior_new(prior.vocab_size, int(s.weight == 0 and s.weight3 == 0),
                                            int(s.weight3 != 0), *args)

    def __del__(self):
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            self._lib.jetspec_prior_free(handle)


def native_prior(lib: ctypes.CDLL, prior: "PairPrior") -> _NativePrior:
    """The library's copy of `prior`'s tables, made once per prior object."""
    mine = getattr(prior, "_native", None)
    if mine is None or mine._lib is not lib:
        mine = prior._native = _NativePrior(lib, prior)
    return mine


def prepare(prior: "PairPrior | None" = None) -> str:
    """Compile (once) and load the library and copy `prior`'s tables into it now, so that no
    request pays for it; says which builder the trees will use."""
    lib = library()
    if lib is None:
        return "Python (the native builder is off or unavailable)"
    if prior is not None:
        native_prior(lib, prior)
    return "the native builder"


def _call(fn, head: list, vals: torch.Tensor, ids: torch.Tensor, meta: list, budgets: Sequence[int]):
    """Run a builder entry point on a batch; its per-request arguments `meta` (lists of ints) go in
    one int64 table and its outputs come in two buffers, so a call's fixed cost stays a few tensor
    creations (at batch 1 it is most of the time)."""
    b, rows, k = vals.shape
    vals = vals.to(torch.float32).contiguous()
    ids = ids.to(torch.int64).contiguous()
    stride = max(budgets)
    table = torch.tensor(meta, dtype=torch.int64)  # [len(meta), b]
    ints = torch.empty(4, b, stride, dtype=torch.int64)  # tokens, parents, depths, ranks
    scores = torch.empty(b, stride, dtype=torch.float64)
    sizes = torch.empty(b, dtype=torch.int64)
    fn(*head, b, rows, k, vals.data_ptr(), ids.data_ptr(), *(row.data_ptr() for row in table), stride,
       ints[0].data_ptr(), ints[1].data_ptr(), ints[2].data_ptr(), scores.data_ptr(), ints[3].data_ptr(),
       sizes.data_ptr())
    return ints[0], ints[1], ints[2], scores, ints[3], sizes.tolist()


def build_rescored(lib: ctypes.CDLL, prior: "PairPrior", roots: Sequence[int], vals: torch.Tensor,
                   ids: torch.Tensor, budgets: Sequence[int], widths: Sequence[int], max_depths: Sequence[int],
                   prev_tokens: Sequence[int | None]):
    """The rescored best-first trees of a batch (vals [b, D, k] float32 and ids [b, D, k] int64 on
    the CPU, widths already capped at k): (tokens, parents, depths, scores, ranks) as [b, stride]
    tensors and the node count of each request."""
    meta = [list(roots), list(budgets), list(widths), list(max_depths),
            [-1 if p is None else p for p in prev_tokens]]
    return _call(lib.jetspec_build_trees, [native_prior(lib, prior).handle], vals, ids, meta, budgets)


def build_plain(lib: ctypes.CDLL, roots: Sequence[int], vals: torch.Tensor, ids: torch.Tensor,
                budgets: Sequence[int], widths: Sequence[int], max_depths: Sequence[int]):
    """The plain best-first trees of a batch (core/tree.py `_best_first`), in build_rescored's
    layout."""
    meta = [list(roots), list(budgets), list(widths), list(max_depths)]
    return _call(lib.jetspec_build_plain_trees, [], vals, ids, meta, budgets)
