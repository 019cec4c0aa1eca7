"""Everything SGLang needs to run JETSPEC on a machine WITHOUT a GPU, in one place.

Active only when torch sees no CUDA device (SGLang's CUDA kernels cannot run, and the
`sgl_kernel` wheel does not even import without libcuda). `activate()` then:
  1. sets SGLANG_USE_CPU_ENGINE=1 for the processes SGLang spawns (the launcher evaluated
     `is_cpu()` before plugins load, but it only resolves arguments, which key on --device;
     the scheduler, where the CPU code paths run, starts after this);
  2. shadows `sgl_kernel` with a stand-in whose ops are written here in pure torch. The
     shadow is a tiny package (`_cpu_shadow/sgl_kernel`) put first on sys.path and
     PYTHONPATH, because SGLang's spawned scheduler imports `sgl_kernel` while unpickling
     its entry point, before any plugin code runs there; spawn copies the parent's sys.path.
  3. registers `TreeVerifyTorchAttnBackend` as attention backend "jetspec_torch_native":
     SGLang's torch_native backend ignores the verify tree mask, this one honours it;
  4. gives SGLang's host-side capture buffers (the routed-experts capturer behind
     --enable-return-routed-experts, which expert-aware scheduling reads) plain CPU memory:
     SGLang pins them with cudaHostRegister, which needs a CUDA driver.
  5. pads the target's lm_head to four rows when a forward has two or three (a verify of width
     2-3 at batch 1, decoding at batch 2-3): the CPU matmul reads the vocabulary weight once
     per row below four rows (core/row_linear.py: 26 / 38 ms for 2 / 3 rows against 19 ms for
     4 on SmolLM2's 49152 x 576 lm_head), which priced small verify widths out on a CPU.
  6. with SGLANG_JETSPEC_CPU_LINEAR=onednn (default torch), routes SGLang's CPU fp32 linear
     layers and plain lm_head through packed oneDNN products (integration/cpu_linear.py,
     core/packed_linear.py); an unknown value stops the server at startup, naming it.

Every stand-in op has the signature of its sgl_kernel namesake (see SGLang's call sites in
sglang/kernels/ops/...) and the semantics of SGLang's Triton kernel of the same name; each
is tested against a plain-python reference in tests/test_integration_cpu_support.py.
Names SGLang only imports get a stub that raises NotImplementedError naming the op.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import types

import torch

from sglang_jetspec.core.verify_layout import walk_links

logger = logging.getLogger(__name__)

SHADOW_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cpu_shadow")
VERIFY_BACKEND = "jetspec_torch_native"
_STANDIN_VERSION = "0.0.0+jetspec-cpu-standin"


# ---- when to activate ------------------------------------------------------------------

def needs_cpu_support() -> bool:
    """True when there is no GPU (SGLang's CUDA kernels and sgl_kernel cannot run)."""
    return not torch.cuda.is_available()


def activate() -> bool:
    """Install the CPU support if needed; idempotent. Returns whether it is active."""
    if not needs_cpu_support():
        return False
    os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    _put_shadow_first()
    install_standin()
    _register_verify_backend()
    _plain_host_buffers()
    _few_row_lm_head()
    _packed_linears()
    return True


def pad_few_rows(compute_lm_head):
    """Wrap LogitsProcessor._compute_lm_head(self, hidden [m, d], lm_head, bias, out=...):
    CPU inputs of 2 or 3 rows go through it padded with zero rows to 4 (item 5 above)."""
    from sglang_jetspec.core.row_linear import PAD_ROWS, PAD_TO

    def wrapped(self, hidden_states, lm_head, embedding_bias=None, *, out=None):
        m = hidden_states.shape[0]
        if hidden_states.device.type != "cpu" or hidden_states.dim() != 2 or m not in PAD_ROWS:
            return compute_lm_head(self, hidden_states, lm_head, embedding_bias, out=out)
        pad = hidden_states.new_zeros(PAD_TO - m, hidden_states.shape[1])
        return compute_lm_head(self, torch.cat([hidden_states, pad]), lm_head, embedding_bias)[:m]

    wrapped.jetspec_padded = True
    return wrapped


def _few_row_lm_head() -> None:
    from sglang.srt.layers.logits_processor import LogitsProcessor

    if not getattr(LogitsProcessor._compute_lm_head, "jetspec_padded", False):
        LogitsProcessor._compute_lm_head = pad_few_rows(LogitsProcessor._compute_lm_head)


def _packed_linears() -> None:
    """Item 6 above (after item 5, so its wrapper is outermost: the packed path serves every row
    count, the padding only what it leaves to SGLang)."""
    from sglang_jetspec.integration import cpu_linear

    if cpu_linear.server_backend() == "onednn":
        cpu_linear.install()


def _plain_host_buffers() -> None:
    """Host capture buffers on device "cpu" without CUDA pinning (item 4 above)."""
    from sglang.srt.mem_cache.pool_host import common

    def alloc_plain(dims, dtype, device, pin_memory, allocator, registration_granularity_bytes=None):
        return allocator.allocate(dims, dtype=dtype, device=device)

    common.ALLOC_MEMORY_FUNCS["cpu"] = alloc_plain


def _put_shadow_first() -> None:
    if SHADOW_DIR not in sys.path:
        sys.path.insert(0, SHADOW_DIR)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if SHADOW_DIR not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([SHADOW_DIR] + parts)


def is_standin(module) -> bool:
    return getattr(module, "__version__", None) == _STANDIN_VERSION


def install_standin(module: types.ModuleType | None = None) -> types.ModuleType:
    """Make `module` (default: a fresh one) the `sgl_kernel` of this process."""
    current = sys.modules.get("sgl_kernel")
    if current is not None and is_standin(current) and module is None:
        return current
    if current is not None and not is_standin(current):
        # a failed import of the real package may have left half-initialised modules
        for name in [m for m in sys.modules if m == "sgl_kernel" or m.startswith("sgl_kernel.")]:
            del sys.modules[name]
    mod = module or types.ModuleType("sgl_kernel")
    mod.__class__ = _StandinModule
    mod.__version__ = _STANDIN_VERSION
    mod.__path__ = []  # a package, so `sgl_kernel.x` submodule imports reach the finder
    for name, fn in STANDIN_OPS.items():
        setattr(mod, name, fn)
    sys.modules["sgl_kernel"] = mod
    if not any(isinstance(f, _SubmoduleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SubmoduleFinder())
    return mod


def _missing_op(qualname: str):
    def op(*args, **kwargs):
        raise NotImplementedError(
            f"{qualname} is not available on CPU: the JetSpec sgl_kernel stand-in only "
            f"implements {sorted(STANDIN_OPS) + sorted(n for ops in SUBMODULE_OPS.values() for n in ops)}")
    op.__name__ = qualname.rsplit(".", 1)[-1]
    return op


class _StandinModule(types.ModuleType):
    """Unknown attributes resolve to stubs: SGLang imports many ops it never calls on CPU."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing_op(f"{self.__name__}.{name}")


class _SubmoduleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`sgl_kernel.<sub>` imports: the pure-python scalar_type module is loaded from the
    real wheel (quantization configs need its tables); every other submodule is a stub."""

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("sgl_kernel.") or not is_standin(sys.modules.get("sgl_kernel")):
            return None
        if fullname == "sgl_kernel.scalar_type":
            real = _real_wheel_file("scalar_type.py")
            if real is not None:
                return importlib.util.spec_from_file_location(fullname, real)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        mod = _StandinModule(spec.name)
        mod.__path__ = []
        return mod

    def exec_module(self, module):
        for name, fn in SUBMODULE_OPS.get(module.__name__, {}).items():
            setattr(module, name, fn)
        return None


def _real_wheel_file(name: str) -> str | None:
    for entry in sys.path:
        if entry == SHADOW_DIR or not entry:
            continue
        path = os.path.join(entry, "sgl_kernel", name)
        if os.path.isfile(path):
            return path
    return None


# ---- stand-in ops (pure torch) -----------------------------------------------------------
# Shapes follow SGLang's call sites; `*_offset` are per-request [bs] tensors.

def _spans(start_offset, end_offset):
    starts = [int(s) for s in start_offset.tolist()]
    ends = [int(e) for e in end_offset.tolist()]
    return starts, ends


def assign_req_to_token_pool_cpu(req_pool_indices, req_to_token, start_offset, end_offset,
                                 out_cache_loc, pool_len):
    """req_to_token[r_i, start_i:end_i] = the next (end_i - start_i) entries of out_cache_loc.

    WARNING: mutates req_to_token.
    """
    starts, ends = _spans(start_offset, end_offset)
    at = 0
    for r, s, e in zip(req_pool_indices.tolist(), starts, ends):
        req_to_token[r, s:e] = out_cache_loc[at: at + e - s].to(req_to_token.dtype)
        at += e - s


def assign_extend_cache_locs_cpu(req_pool_indices, req_to_token, start_offset, end_offset,
                                 out_cache_loc, pool_len):
    """The inverse gather: out_cache_loc (packed) = req_to_token[r_i, start_i:end_i] for all i.

    WARNING: mutates out_cache_loc.
    """
    starts, ends = _spans(start_offset, end_offset)
    at = 0
    for r, s, e in zip(req_pool_indices.tolist(), starts, ends):
        out_cache_loc[at: at + e - s] = req_to_token[r, s:e].to(out_cache_loc.dtype)
        at += e - s


def assign_draft_cache_locs_contiguous_cpu(req_pool_indices, req_to_token, seq_lens,
                                           out_cache_loc, pool_len, topk, num_cols):
    """out_cache_loc[i*L:(i+1)*L] = req_to_token[r_i, seq_len_i : seq_len_i + L], L = topk*num_cols.

    WARNING: mutates out_cache_loc.
    """
    width = topk * num_cols
    for i, (r, s) in enumerate(zip(req_pool_indices.tolist(), seq_lens.tolist())):
        out_cache_loc[i * width:(i + 1) * width] = req_to_token[r, s:s + width].to(out_cache_loc.dtype)


def fill_accept_out_cache_loc_cpu(accept_index, out_cache_loc, accept_out_cache_loc):
    """Compact: the k-th non-negative entry of accept_index (row-major) writes
    accept_out_cache_loc[k] = out_cache_loc[that entry]. WARNING: mutates accept_out_cache_loc.
    """
    flat = accept_index.reshape(-1).long()
    src = flat[flat >= 0]
    accept_out_cache_loc[: src.numel()] = out_cache_loc[src].to(accept_out_cache_loc.dtype)


def fill_bonus_tokens_cpu(accept_tokens, accept_lens, bonus_tokens, accept_stride):
    """bonus_tokens[i] = accept_tokens[i * stride + accept_lens[i] - 1]. WARNING: mutates bonus_tokens."""
    rows = torch.arange(accept_lens.numel(), device=accept_lens.device)
    idx = rows * accept_stride + accept_lens.long() - 1
    bonus_tokens.copy_(accept_tokens.reshape(-1)[idx].to(bonus_tokens.dtype))


def verify_tree_greedy_cpu(predicts, accept_index, accept_token_num, candidates, retrive_index,
                           retrive_next_token, retrive_next_sibling, target_predict):
    """Greedy tree walk (SGLang's verify_tree_greedy): from the root, follow the child whose
    token equals the target argmax at the current node, scanning siblings in link order.

    predicts [bs*n] gets the target token at every accepted node (the last one: the bonus),
    accept_index [bs, w] the global rows of the accepted path (root first), accept_token_num
    [bs] the number of accepted drafts. WARNING: mutates the first three arguments.
    """
    bs = candidates.shape[0]
    width = accept_index.shape[1]
    cand, ridx = candidates.tolist(), retrive_index.tolist()
    nxt, sib = retrive_next_token.tolist(), retrive_next_sibling.tolist()
    target = target_predict.reshape(-1).tolist()
    for b in range(bs):
        rows = walk_links(cand[b], ridx[b], nxt[b], sib[b], target, width)
        for j, row in enumerate(rows):
            accept_index[b, j] = row
            predicts[row] = target[row]  # the next accepted token, or the bonus at the last row
        accept_token_num[b] = len(rows) - 1


def copy_all_layer_kv_cache_cpu(data_ptrs, strides, tgt_loc, src_loc):
    """For every buffer (raw data pointer + row stride in bytes): row tgt[j] = row src[j].

    All source rows are read before any is written (safe for overlapping locations). The
    buffers are host memory owned by the KV pool; ctypes gives torch a byte view of them.
    """
    if tgt_loc.numel() == 0:
        return
    tgt, src = tgt_loc.long().cpu(), src_loc.long().cpu()
    rows = int(torch.maximum(tgt.max(), src.max())) + 1
    for ptr, stride in zip(data_ptrs.tolist(), strides.tolist()):
        raw = (ctypes.c_uint8 * (rows * int(stride))).from_address(int(ptr))
        view = torch.frombuffer(raw, dtype=torch.uint8).view(rows, int(stride))
        view[tgt] = view[src].clone()


def reconstruct_indices_from_tree_mask(tree_mask, verified_seq_len, positions, retrieve_index,
                                       retrieve_next_token, retrieve_next_sibling, batch_size,
                                       draft_token_num):
    """NGRAM's verify metadata from its tree masks (sgl_kernel.speculative, called by SGLang's
    NGRAM worker). tree_mask: bool [bs*n*n], row i marks i's ancestors (and itself).
    WARNING: writes positions and the three retrieve_* outputs ([bs*n] or [bs, n]) in place."""
    n = draft_token_num
    if batch_size == 0:
        return
    m = tree_mask.reshape(batch_size, n, n).to(torch.bool)
    idx = torch.arange(n, device=m.device)
    anc = m & (idx[None, None, :] < idx[None, :, None])  # [bs, i, j]: j a strict ancestor of i
    depth = anc.sum(-1)  # [bs, n]
    # parent[i] = the deepest (largest-index) strict ancestor, -1 for the root
    parent = torch.where(anc, idx[None, None, :], torch.full_like(anc, -1, dtype=torch.long)).amax(-1)
    # first child of t = smallest k with t as an ancestor
    kids = torch.where(anc, idx[None, :, None], torch.full_like(anc, n, dtype=torch.long)).amin(1)
    first_child = torch.where(kids < n, kids, torch.full_like(kids, -1))
    # next sibling of t = smallest k > t with the same parent (none for the root)
    same = (parent[:, :, None] == parent[:, None, :]) & (idx[:, None] > idx[None, :])  # [bs, k, t]
    sib = torch.where(same, idx[None, :, None], torch.full_like(same, n, dtype=torch.long)).amin(1)
    next_sibling = torch.where((sib < n) & (parent >= 0), sib, torch.full_like(sib, -1))
    flat = (torch.arange(batch_size, device=m.device)[:, None] * n + idx[None, :])
    pos = depth + verified_seq_len.view(-1, 1).to(torch.long)
    for out, val in ((positions, pos), (retrieve_index, flat), (retrieve_next_token, first_child),
                     (retrieve_next_sibling, next_sibling)):
        out.view(-1)[: batch_size * n].copy_(val.reshape(-1).to(out.dtype))


STANDIN_OPS = {
    fn.__name__: fn for fn in (
        assign_req_to_token_pool_cpu, assign_extend_cache_locs_cpu,
        assign_draft_cache_locs_contiguous_cpu, fill_accept_out_cache_loc_cpu,
        fill_bonus_tokens_cpu, verify_tree_greedy_cpu, copy_all_layer_kv_cache_cpu,
    )
}
# ops SGLang imports from a submodule (`from sgl_kernel.<sub> import op`)
SUBMODULE_OPS = {
    "sgl_kernel.speculative": {"reconstruct_indices_from_tree_mask": reconstruct_indices_from_tree_mask},
}


# ---- tree verify on torch attention ------------------------------------------------------

def tree_verify_attention(q, k_buf, v_buf, req_to_token, req_pool_indices, prefix_lens,
                          custom_mask, n, scaling):
    """Attention of the n tree nodes of every request over its prefix and its own tree.

    q [bs*n, Hq, D]; k_buf/v_buf [slots, Hkv, Dv] already hold the tree's K/V at
    req_to_token[r, p:p+n]; custom_mask flat bool, FULL_MASK (per request n x (p+n)) or
    QLEN_ONLY (per request n x n, prefix columns implied). Returns [bs*n, Hq, Dv].
    """
    prefixes = [int(p) for p in prefix_lens.tolist()]
    bs = len(prefixes)
    full_size = sum(n * (p + n) for p in prefixes)
    if custom_mask.numel() == full_size:
        qlen_only = False
    elif custom_mask.numel() == bs * n * n:
        qlen_only = True
    else:
        raise ValueError(f"verify custom_mask has {custom_mask.numel()} entries; expected "
                         f"{full_size} (FULL_MASK) or {bs * n * n} (QLEN_ONLY) for prefixes "
                         f"{prefixes} and {n} nodes per request")
    out = q.new_empty(q.shape[0], q.shape[1], v_buf.shape[-1])
    at = 0
    for b, (r, p) in enumerate(zip(req_pool_indices.tolist(), prefixes)):
        slots = req_to_token[r, : p + n].long()
        keys = k_buf[slots].to(q.dtype).transpose(0, 1)  # [Hkv, p+n, D]
        vals = v_buf[slots].to(q.dtype).transpose(0, 1)
        if qlen_only:
            tree = custom_mask[b * n * n:(b + 1) * n * n].view(n, n).bool()
            mask = torch.cat([torch.ones(n, p, dtype=torch.bool, device=q.device), tree], dim=1)
        else:
            mask = custom_mask[at: at + n * (p + n)].view(n, p + n).bool()
            at += n * (p + n)
        qb = q[b * n:(b + 1) * n].transpose(0, 1)  # [Hq, n, D]
        ob = torch.nn.functional.scaled_dot_product_attention(
            qb[None], keys[None], vals[None], attn_mask=mask, scale=scaling,
            enable_gqa=qb.shape[0] != keys.shape[0])[0]
        out[b * n:(b + 1) * n] = ob.transpose(0, 1)
    return out


def _register_verify_backend() -> None:
    """Register "jetspec_torch_native" (torch_native + tree-mask verify) with SGLang."""
    from sglang.srt.layers.attention import attention_registry

    if VERIFY_BACKEND in attention_registry.ATTENTION_BACKENDS:
        return
    from sglang.srt.arg_groups.choices import add_attention_backend_choices

    add_attention_backend_choices([VERIFY_BACKEND])

    @attention_registry.register_attention_backend(VERIFY_BACKEND)
    def _create(runner):
        return _verify_backend_class()(runner)


_BACKEND_CLASS = None


def _verify_backend_class():
    """Built lazily: importing SGLang's attention backends pulls in the model stack."""
    global _BACKEND_CLASS
    if _BACKEND_CLASS is not None:
        return _BACKEND_CLASS
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend
    from sglang.srt.mem_cache.memory_pool import KVWriteLoc

    class TreeVerifyTorchAttnBackend(TorchNativeAttnBackend):
        """torch_native, except TARGET_VERIFY forwards honour spec_info.custom_mask."""

        def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True):
            if not forward_batch.forward_mode.is_target_verify():
                return super().forward_extend(q, k, v, layer, forward_batch, save_kv_cache)
            if layer.sliding_window_size is not None and layer.sliding_window_size > -1:
                raise NotImplementedError("tree verify with sliding-window attention on CPU")
            if save_kv_cache and k is not None and v is not None:
                self.token_to_kv_pool.set_kv_buffer(
                    layer, KVWriteLoc(forward_batch.out_cache_loc, self.swa_out_cache_loc), k, v)
            spec = forward_batch.spec_info
            out = tree_verify_attention(
                q.view(-1, layer.tp_q_head_num, layer.qk_head_dim),
                self.token_to_kv_pool.get_key_buffer(layer.layer_id),
                self.token_to_kv_pool.get_value_buffer(layer.layer_id),
                self.req_to_token_pool.req_to_token, forward_batch.req_pool_indices,
                forward_batch.seq_lens, spec.custom_mask, spec.draft_token_num, layer.scaling)
            return out.reshape(q.shape[0], layer.tp_q_head_num * layer.v_head_dim)

    _BACKEND_CLASS = TreeVerifyTorchAttnBackend
    return _BACKEND_CLASS
