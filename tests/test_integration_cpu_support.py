"""The CPU stand-in sgl_kernel ops and the tree-verify attention, each against a plain
reference written independently here (loops over python lists, a dense masked softmax)."""

import sys
import types

import pytest
import torch

from sglang_jetspec.core.tree import build_tree
from sglang_jetspec.core.verify_layout import (
    full_custom_mask, greedy_walk_with_layout, qlen_custom_mask, to_verify_layout,
)
from sglang_jetspec.integration import cpu_support as cs
from tree_masks import random_ancestor_masks


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _spans(g, bs, pool_len):
    starts = torch.randint(0, pool_len // 2, (bs,), generator=g)
    lens = torch.randint(0, pool_len // 2, (bs,), generator=g)
    return starts, starts + lens


@pytest.mark.parametrize("seed", range(5))
def test_assign_req_to_token_pool_and_its_inverse(seed):
    g = _gen(seed)
    bs, pool_len, rows = 1 + seed, 12, 8
    rpi = torch.randperm(rows, generator=g)[:bs]
    start, end = _spans(g, bs, pool_len)
    locs = torch.randint(1, 999, (int((end - start).sum()),), generator=g)
    table = torch.zeros(rows, pool_len, dtype=torch.int32)
    cs.assign_req_to_token_pool_cpu(rpi, table, start, end, locs, pool_len)

    want = torch.zeros_like(table)
    at = 0
    for r, s, e in zip(rpi.tolist(), start.tolist(), end.tolist()):
        for pos in range(s, e):
            want[r, pos] = int(locs[at])
            at += 1
    assert torch.equal(table, want)

    back = torch.full_like(locs, -1)
    cs.assign_extend_cache_locs_cpu(rpi, table, start, end, back, pool_len)
    assert torch.equal(back, locs)


def test_assign_draft_cache_locs_contiguous():
    table = torch.arange(40).view(4, 10)
    rpi, seq_lens = torch.tensor([2, 0]), torch.tensor([3, 5])
    out = torch.full((2 * 4,), -1)
    cs.assign_draft_cache_locs_contiguous_cpu(rpi, table, seq_lens, out, 10, topk=2, num_cols=2)
    assert out.tolist() == [23, 24, 25, 26, 5, 6, 7, 8]


@pytest.mark.parametrize("seed", range(5))
def test_fill_accept_out_cache_loc_compacts_in_row_major_order(seed):
    g = _gen(seed)
    bs, width, n = 3, 4, 6
    accept = torch.full((bs, width), -1, dtype=torch.int32)
    for b in range(bs):
        k = int(torch.randint(1, width + 1, (1,), generator=g))
        accept[b, :k] = b * n + torch.randperm(n, generator=g)[:k].int()
    out_cache = torch.randint(100, 200, (bs * n,), generator=g)
    got = torch.zeros(bs * width, dtype=torch.int64)
    cs.fill_accept_out_cache_loc_cpu(accept, out_cache, got)
    want = [int(out_cache[i]) for i in accept.flatten().tolist() if i != -1]
    assert got[: len(want)].tolist() == want
    assert not got[len(want):].any()  # the tail is left alone


def test_fill_bonus_tokens():
    tokens = torch.arange(12).view(3, 4) * 10
    lens = torch.tensor([1, 4, 2])
    bonus = torch.zeros(3, dtype=torch.long)
    cs.fill_bonus_tokens_cpu(tokens.flatten(), lens, bonus, 4)
    assert bonus.tolist() == [0, 70, 90]


def _random_trees(seed, bs, n, vocab):
    g = _gen(seed)
    trees = []
    for _ in range(bs):
        lp = torch.log_softmax(torch.randn(6, vocab, generator=g), -1)
        trees.append(build_tree(int(torch.randint(vocab, (1,), generator=g)), lp, n, width=3))
    return trees


def _agreeing_target(g, trees, vocab, n):
    """Target argmax that often follows a drafted child, so walks of several steps happen."""
    target = torch.randint(vocab, (len(trees), n), generator=g)
    for b, tree in enumerate(trees):
        for node, kids in enumerate(tree.children()):
            if kids and torch.rand(1, generator=g) < 0.8:
                pick = kids[int(torch.randint(len(kids), (1,), generator=g))]
                target[b, node] = tree.tokens[pick]
    return target


@pytest.mark.parametrize("seed", range(8))
def test_verify_tree_greedy_matches_the_layout_walk(seed):
    bs, n, vocab = 1 + seed % 3, 9, 5
    trees = _random_trees(seed, bs, n, vocab)
    n = trees[0].n
    layout = to_verify_layout(trees, [4] * bs)
    target = _agreeing_target(_gen(100 + seed), trees, vocab, n)
    width = max(int(t.depths.max()) for t in trees) + 1
    predicts = torch.zeros(bs * n, dtype=torch.int32)
    accept = torch.full((bs, width), -1, dtype=torch.int32)
    num = torch.empty(bs, dtype=torch.int32)
    cs.verify_tree_greedy_cpu(predicts, accept, num, layout.draft_tokens.view(bs, n),
                              layout.retrieve_index, layout.retrieve_next_token,
                              layout.retrieve_next_sibling, target)
    paths, bonus = greedy_walk_with_layout(layout, target, max_tree_depth=width)
    for b in range(bs):
        k = int(num[b])
        assert [int(x) - b * n for x in accept[b, : k + 1]] == paths[b]
        assert (accept[b, k + 1:] == -1).all()
        rows = accept[b, : k + 1].long()
        # predicts at every accepted node = the target's token there (the last: the bonus)
        assert predicts[rows].tolist() == target.flatten()[rows].tolist()
        assert int(predicts[rows[-1]]) == bonus[b]


def test_copy_all_layer_kv_cache_moves_rows_in_every_buffer():
    bufs = [torch.arange(24, dtype=torch.float32).view(6, 4),
            torch.arange(100, 112, dtype=torch.int16).view(6, 2)]
    ptrs = torch.tensor([b.data_ptr() for b in bufs])
    strides = torch.tensor([b.stride(0) * b.element_size() for b in bufs])
    want = [b.clone() for b in bufs]
    tgt, src = torch.tensor([0, 1, 5]), torch.tensor([1, 3, 0])  # overlapping: 1 is both
    for w in want:
        w[tgt] = w[src].clone()
    cs.copy_all_layer_kv_cache_cpu(ptrs, strides, tgt, src)
    for got, w in zip(bufs, want):
        assert torch.equal(got, w)


def _dense_tree_attention(q, k_buf, v_buf, table, rpi, prefixes, trees_masks, n, scale):
    """Reference: per request and head, softmax over allowed keys in fp64."""
    outs = []
    for b, (r, p) in enumerate(zip(rpi.tolist(), prefixes)):
        slots = table[r, : p + n].long()
        allowed = torch.cat([torch.ones(n, p, dtype=torch.bool), trees_masks[b]], 1)
        hq, hkv = q.shape[1], k_buf.shape[1]
        for i in range(n):
            row = []
            for h in range(hq):
                kh = k_buf[slots, h // (hq // hkv)].double()
                vh = v_buf[slots, h // (hq // hkv)].double()
                s = (kh @ q[b * n + i, h].double()) * scale
                s[~allowed[i]] = float("-inf")
                row.append(torch.softmax(s, 0) @ vh)
            outs.append(torch.stack(row))
    return torch.stack(outs).float()


@pytest.mark.parametrize("qlen_only", [False, True])
def test_tree_verify_attention_honours_the_tree_mask(qlen_only):
    g = _gen(3)
    trees = _random_trees(7, 2, 6, 7)
    n, prefixes = trees[0].n, [3, 5]
    layout = to_verify_layout(trees, prefixes)
    hq, hkv, d, slots = 4, 2, 8, 60
    k_buf, v_buf = torch.randn(slots, hkv, d, generator=g), torch.randn(slots, hkv, d, generator=g)
    table = torch.randperm(slots, generator=g)[:45].view(3, 15)
    rpi = torch.tensor([2, 0])
    q = torch.randn(2 * n, hq, d, generator=g)
    mask = qlen_custom_mask(layout) if qlen_only else full_custom_mask(layout, prefixes)
    got = cs.tree_verify_attention(q, k_buf, v_buf, table, rpi, torch.tensor(prefixes), mask, n, 0.3)
    want = _dense_tree_attention(q, k_buf, v_buf, table, rpi, prefixes, layout.tree_mask, n, 0.3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the mask matters: a causal (all-ancestors) mask over the same nodes gives other rows
    causal = torch.ones(n, n, dtype=torch.bool).tril().expand(2, n, n)
    if not torch.equal(causal, layout.tree_mask):
        other = _dense_tree_attention(q, k_buf, v_buf, table, rpi, prefixes, causal, n, 0.3)
        assert not torch.allclose(got, other, atol=1e-4)


def test_tree_verify_attention_rejects_a_mask_of_the_wrong_size():
    q = torch.zeros(4, 1, 2)
    with pytest.raises(ValueError, match="custom_mask has 3 entries"):
        cs.tree_verify_attention(q, torch.zeros(9, 1, 2), torch.zeros(9, 1, 2),
                                 torch.zeros(1, 9, dtype=torch.long), torch.tensor([0]),
                                 torch.tensor([2]), torch.ones(3, dtype=torch.bool), 4, 1.0)


@pytest.fixture
def clean_sgl_kernel(monkeypatch):
    """No sgl_kernel* modules during the test; exactly the previous ones afterwards."""
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    saved = {k: v for k, v in sys.modules.items() if k == "sgl_kernel" or k.startswith("sgl_kernel.")}
    for k in saved:
        del sys.modules[k]
    yield
    for k in [k for k in sys.modules if k == "sgl_kernel" or k.startswith("sgl_kernel.")]:
        del sys.modules[k]
    sys.modules.update(saved)


def test_standin_module_serves_ops_and_names_missing_ones(clean_sgl_kernel):
    mod = cs.install_standin()
    assert sys.modules["sgl_kernel"] is mod and cs.is_standin(mod)
    assert mod.verify_tree_greedy_cpu is cs.verify_tree_greedy_cpu
    with pytest.raises(NotImplementedError, match="sgl_kernel.rmsnorm is not available on CPU"):
        mod.rmsnorm(torch.zeros(1))
    import sgl_kernel.allreduce as sub  # submodules resolve to stubs as well

    with pytest.raises(NotImplementedError, match="sgl_kernel.allreduce.foo"):
        sub.foo()
    assert cs.install_standin() is mod  # idempotent


def test_shadow_package_is_the_standin(clean_sgl_kernel, monkeypatch):
    """What SGLang's spawned processes import: the shadow dir's sgl_kernel package."""
    monkeypatch.setattr(sys, "path", [cs.SHADOW_DIR] + sys.path)
    import sgl_kernel

    assert cs.is_standin(sgl_kernel)
    assert isinstance(sgl_kernel, types.ModuleType)
    assert sgl_kernel.fill_bonus_tokens_cpu is cs.fill_bonus_tokens_cpu


# ---- oracle: SGLang's own Triton kernels of the same names, interpreted on CPU ------------

_ORACLE = r'''
import sys, types, torch
from sglang_jetspec.integration import cpu_support as cs
cs.install_standin()  # the real sgl_kernel cannot import here; the kernels below are Triton
from sglang.kernels.ops.speculative.cache_locs import assign_extend_cache_locs
from sglang.kernels.ops.speculative.eagle import fill_accept_out_cache_loc, fill_bonus_tokens
from sglang.srt.mem_cache.allocation import assign_req_to_token_pool
g = torch.Generator().manual_seed(0)
for trial in range(4):
    bs, pool_len, rows = 3, 40, 6
    rpi = torch.randperm(rows, generator=g)[:bs]
    start = torch.randint(0, 10, (bs,), generator=g)
    end = start + torch.randint(0, 30, (bs,), generator=g)
    locs = torch.randint(1, 999, (int((end - start).sum()),), generator=g)
    a, b = torch.zeros(rows, pool_len, dtype=torch.int32), torch.zeros(rows, pool_len, dtype=torch.int32)
    assign_req_to_token_pool[(bs,)](rpi, a, start, end, locs, pool_len, 4)
    cs.assign_req_to_token_pool_cpu(rpi, b, start, end, locs, pool_len)
    assert torch.equal(a, b), "assign_req_to_token_pool"
    x, y = torch.zeros_like(locs), torch.zeros_like(locs)
    assign_extend_cache_locs[(bs,)](rpi, a, start, end, x, pool_len, 4)
    cs.assign_extend_cache_locs_cpu(rpi, a, start, end, y, pool_len)
    assert torch.equal(x, y), "assign_extend_cache_locs"
    width, n = 4, 5
    acc = torch.full((bs, width), -1, dtype=torch.int32)
    for r in range(bs):
        k = int(torch.randint(1, width + 1, (1,), generator=g))
        acc[r, :k] = r * n + torch.randperm(n, generator=g)[:k].int()
    out = torch.randint(100, 200, (bs * n,), generator=g)
    p, q = torch.zeros(bs * width, dtype=torch.int64), torch.zeros(bs * width, dtype=torch.int64)
    fill_accept_out_cache_loc[(bs * width,)](acc, out, p, 16)
    cs.fill_accept_out_cache_loc_cpu(acc, out, q)
    assert torch.equal(p, q), "fill_accept_out_cache_loc"
    toks, lens = torch.randint(0, 50, (bs * width,), generator=g), (acc >= 0).sum(1)
    u, v = torch.zeros(bs, dtype=torch.int64), torch.zeros(bs, dtype=torch.int64)
    fill_bonus_tokens[(bs,)](toks, lens, u, width)
    cs.fill_bonus_tokens_cpu(toks, lens, v, width)
    assert torch.equal(u, v), "fill_bonus_tokens"
from sglang.kernels.ops.speculative.reconstruct_tree import reconstruct_indices_from_tree_mask_triton
from tree_masks import random_ancestor_masks
for trial in range(3):
    bs, n = 3, 6
    mask = random_ancestor_masks(bs, n, g)
    seq = torch.randint(0, 50, (bs,), generator=g)
    outs = [[torch.zeros(bs * n, dtype=torch.int64) for _ in range(4)] for _ in range(2)]
    reconstruct_indices_from_tree_mask_triton(mask.flatten(), seq, *outs[0], bs, n)
    cs.reconstruct_indices_from_tree_mask(mask.flatten(), seq, *outs[1], bs, n)
    for x, y in zip(*outs):
        assert torch.equal(x, y), ("reconstruct_indices_from_tree_mask", x, y)
print("ORACLE OK")
'''


def test_standin_ops_match_sglangs_triton_kernels():
    import os
    import subprocess

    from subprocess_env import clean_env

    env = clean_env(TRITON_INTERPRET="1", OMP_NUM_THREADS="1")  # the Triton branches, not the *_cpu ones
    env["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__)) + os.pathsep + env["PYTHONPATH"]  # tree_masks
    proc = subprocess.run([sys.executable, "-c", _ORACLE], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "ORACLE OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


def _reconstruct_reference(mask, seq_len):
    """The op's documented contract, node by node: mask [n, n] bool (row i: i's ancestors)."""
    n = len(mask)
    anc = [[bool(mask[i][j]) and j < i for j in range(n)] for i in range(n)]
    parent = [max((j for j in range(i) if anc[i][j]), default=-1) for i in range(n)]
    pos = [seq_len + sum(anc[i]) for i in range(n)]
    child = [next((k for k in range(t + 1, n) if anc[k][t]), -1) for t in range(n)]
    sib = [-1 if parent[t] < 0 else next((k for k in range(t + 1, n) if parent[k] == parent[t]), -1)
           for t in range(n)]
    return pos, child, sib


@pytest.mark.parametrize("seed", range(6))
def test_reconstruct_indices_from_tree_mask_matches_its_contract(seed):
    """NGRAM's verify metadata (sgl_kernel.speculative), on random trees in BFS-ish order."""
    g = torch.Generator().manual_seed(seed)
    bs, n = 2, int(torch.randint(1, 12, (1,), generator=g))
    mask = random_ancestor_masks(bs, n, g)
    seq = torch.randint(0, 100, (bs,), generator=g)
    pos, idx, nxt, sib = (torch.full((bs, n), -7, dtype=torch.int64) for _ in range(4))
    cs.reconstruct_indices_from_tree_mask(mask.flatten(), seq, pos, idx, nxt, sib, bs, n)
    for b in range(bs):
        want = _reconstruct_reference(mask[b].tolist(), int(seq[b]))
        assert pos[b].tolist() == want[0] and nxt[b].tolist() == want[1] and sib[b].tolist() == want[2]
        assert idx[b].tolist() == [b * n + i for i in range(n)]


def test_ngram_op_is_served_from_its_submodule(clean_sgl_kernel):
    cs.install_standin()
    from sgl_kernel.speculative import reconstruct_indices_from_tree_mask

    assert reconstruct_indices_from_tree_mask is cs.reconstruct_indices_from_tree_mask


def test_few_row_lm_head_padding_keeps_the_values_and_the_other_paths():
    """Item 5: two or three CPU rows go through the lm_head padded to four; the values are
    F.linear's, other row counts and an `out` buffer pass through untouched."""
    import torch.nn.functional as F

    from sglang_jetspec.integration.cpu_support import pad_few_rows

    calls = []

    def compute(self, hidden, lm_head, bias=None, *, out=None):
        calls.append((hidden.shape[0], out is not None))
        return F.linear(hidden, lm_head.weight)

    head = torch.nn.Linear(12, 50, bias=False)
    wrapped = pad_few_rows(compute)
    g = torch.Generator().manual_seed(0)
    for m in (1, 2, 3, 4, 7):
        x = torch.randn(m, 12, generator=g)
        torch.testing.assert_close(wrapped(None, x, head), F.linear(x, head.weight), rtol=1e-5, atol=1e-5)
    assert [c[0] for c in calls] == [1, 4, 4, 4, 7]
    wrapped(None, torch.randn(5, 12), head, out=torch.empty(5, 50))
    assert calls[-1] == (5, True)
    assert wrapped.jetspec_padded


def test_activation_pads_sglangs_lm_head_once():
    from sglang.srt.layers.logits_processor import LogitsProcessor

    from sglang_jetspec.integration import cpu_support

    cpu_support._few_row_lm_head()
    first = LogitsProcessor._compute_lm_head
    cpu_support._few_row_lm_head()
    assert first.jetspec_padded and LogitsProcessor._compute_lm_head is first
