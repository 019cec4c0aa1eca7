"""Each Triton kernel in moe_kernels against its pure-torch reference, under TRITON_INTERPRET=1 on CPU.

Not collected by itself (no test_ prefix): tests/test_moe_kernels.py runs this file in a fresh
pytest process, because interpreted kernels break once SGLang's plugins were loaded in the same
process (an earlier test importing SGLang modules is enough).

Triton decides at decoration time whether a kernel is interpreted, so the fixture sets the variable
and (re)imports the kernel modules; it restores the environment afterwards so no other test sees it.
Shapes are small and deliberately not powers of two, to exercise the masks.
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sglang_jetspec.core import expert_load as ref

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def kernels():
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        eu = importlib.reload(importlib.import_module("moe_kernels.expert_union"))
        vm = importlib.reload(importlib.import_module("moe_kernels.verify_moe"))
        assert type(eu._hist_kernel).__name__ == "InterpretedFunction"
        yield eu, vm
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old


def _routing(seed, B, N, L, K, E):
    g = torch.Generator().manual_seed(seed)
    ids = torch.rand(B, N, L, E, generator=g).topk(K, dim=-1).indices  # distinct per node, like top-k
    ids = torch.where(torch.rand(B, N, L, K, generator=g) < 0.1, -1, ids)  # some empty slots
    valid = torch.rand(B, N, generator=g) > 0.2
    return ids, valid


@pytest.mark.parametrize(
    "seed,B,N,L,K,E,R",
    [(0, 3, 7, 5, 3, 12, 4), (1, 2, 70, 3, 2, 40, 5), (2, 1, 1, 2, 1, 3, 1), (3, 4, 5, 2, 10, 150, 3)],
)
def test_expert_load_matches_reference(kernels, seed, B, N, L, K, E, R):
    eu, _ = kernels
    ids, valid = _routing(seed, B, N, L, K, E)
    e2r = torch.randint(0, R, (E,), generator=torch.Generator().manual_seed(seed))
    got = eu.expert_load(ids, valid, E, e2r, R)
    want = ref.expert_load(ids, valid, E, e2r, R)
    for field in ("hist", "union_counts", "rank_experts", "rank_tokens"):
        assert torch.equal(getattr(got, field), getattr(want, field)), field
    assert want.batch_counts.sum() > 0


def test_expert_load_int32_ids_strided_and_no_ranks(kernels):
    eu, _ = kernels
    ids, valid = _routing(5, 2, 9, 4, 3, 20)
    strided = ids.int().transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    got = eu.expert_load(strided, valid, 20)
    want = ref.expert_load(ids, valid, 20)
    assert torch.equal(got.hist, want.hist) and torch.equal(got.rank_tokens, want.rank_tokens)
    assert got.rank_experts.shape[-1] == 1 and torch.equal(got.rank_experts[..., 0], want.union_counts)


@pytest.mark.parametrize("seed,M,L,K,E", [(0, 6, 5, 3, 12), (1, 3, 20, 8, 64), (2, 1, 1, 1, 2)])
def test_marginal_new_experts_matches_reference(kernels, seed, M, L, K, E):
    eu, _ = kernels
    g = torch.Generator().manual_seed(seed)
    union = torch.rand(L, E, generator=g) < 0.4
    nodes = torch.randint(-1, E, (M, L, K), generator=g)
    nodes[0, 0] = nodes[0, 0, 0]  # one slot list that repeats an expert
    for per_layer in (False, True):
        got = eu.marginal_new_experts(union, nodes, per_layer)
        assert got.dtype == torch.int32  # the kernel's output, not the reference's long
        assert torch.equal(got.long(), ref.marginal_new_experts(union, nodes, per_layer))
    assert eu.marginal_new_experts(union, nodes[-1]).item() == ref.marginal_new_experts(union, nodes[-1]).item()


def test_align_pairs_blocks_hold_one_expert_each(kernels):
    _, vm = kernels
    ids = torch.tensor([[2, 0], [2, -1], [1, 2], [0, 2]])  # [T=4, K=2], pairs 0..7
    pair_ids, block_expert = vm.align_pairs(ids, num_experts=4, block_m=2)
    P = ids.numel()
    blocks = pair_ids.view(-1, 2).tolist()
    assert block_expert.tolist() == [0, 1, 2, 2, -1, -1, -1, -1]  # cdiv(8, 2) + min(4, 8) blocks
    assert blocks[:4] == [[1, 6], [4, P], [0, 2], [5, 7]]  # stable order inside each expert
    real = [p for p in pair_ids.tolist() if p < P]
    assert sorted(real) == [0, 1, 2, 4, 5, 6, 7]  # every routed pair once, the -1 pair (3) never
    flat = ids.flatten()
    for blk, e in zip(blocks, block_expert.tolist()):
        assert all(flat[p].item() == e for p in blk if p < P)


@pytest.mark.parametrize(
    "seed,T,H,I,E,K,blocks",
    [(0, 1, 32, 24, 5, 2, None), (1, 13, 48, 40, 6, 2, (16, 16, 16)), (2, 37, 40, 16, 9, 3, (32, 16, 16))],
)
def test_fused_verify_moe_matches_reference(kernels, monkeypatch, seed, T, H, I, E, K, blocks):
    _, vm = kernels
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g)
    w13 = torch.randn(E, 2 * I, H, generator=g) / H**0.5
    w2 = torch.randn(E, H, I, generator=g) / I**0.5
    ids = torch.rand(T, E, generator=g).topk(K, dim=-1).indices
    ids[0, -1] = -1  # a dropped slot contributes nothing
    weights = torch.rand(T, K, generator=g)
    want = vm.moe_forward_reference(x, ids, weights, w13, w2)
    monkeypatch.setattr(vm, "moe_forward_reference", None)  # the kernel must not fall back
    got = vm.fused_verify_moe(x, ids, weights, w13, w2, blocks=blocks)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert want.abs().max() > 0.1


def test_grouped_mm_path_matches_reference(kernels):
    _, vm = kernels
    g = torch.Generator().manual_seed(7)
    T, H, I, E, K = 11, 32, 16, 7, 3
    x, w13, w2 = torch.randn(T, H, generator=g), torch.randn(E, 2 * I, H, generator=g), torch.randn(E, H, I, generator=g)
    ids = torch.rand(T, E, generator=g).topk(K, dim=-1).indices
    ids[4, 0] = -1
    weights = torch.rand(T, K, generator=g)
    torch.testing.assert_close(vm.moe_forward_grouped_mm(x, ids, weights, w13, w2),
                               vm.moe_forward_reference(x, ids, weights, w13, w2), rtol=1e-4, atol=1e-3)


def test_reference_uses_sglang_gate_then_up_order(kernels):
    """w13 rows [0, I) are the gate (silu applied), rows [I, 2I) the up projection."""
    _, vm = kernels
    H, I = 2, 1
    x = torch.tensor([[1.0, 0.0]])
    w13 = torch.tensor([[[2.0, 0.0], [3.0, 0.0]]])  # gate = 2, up = 3
    w2 = torch.tensor([[[1.0], [0.0]]])
    out = vm.moe_forward_reference(x, torch.tensor([[0]]), torch.tensor([[0.5]]), w13, w2)
    expect = 0.5 * (2.0 * torch.sigmoid(torch.tensor(2.0)) * 3.0)
    assert out[0, 0].item() == pytest.approx(expect.item()) and out[0, 1].item() == 0.0


def test_wrappers_fall_back_without_triton(kernels, monkeypatch):
    eu, vm = kernels
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not eu.use_triton(torch.zeros(1))
    ids, valid = _routing(0, 2, 4, 2, 2, 6)
    assert torch.equal(eu.expert_load(ids, valid, 6).hist, ref.expert_load(ids, valid, 6).hist)
    union = torch.zeros(2, 6, dtype=torch.bool)
    assert eu.marginal_new_experts(union, ids[0]).dtype == torch.long  # the reference's dtype


def test_gpu_check_interpret_writes_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "launch.gpu_check", "--interpret", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["interpret"] is True and report["checks"] and report["sglang_imported"] is False
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    names = {c["name"] for c in report["checks"]}
    assert {"expert_load", "marginal_new_experts", "fused_verify_moe"} <= {n.split("[")[0] for n in names}
    assert report["timings"] and all(t["ms"] > 0 for t in report["timings"])
    assert "tokens" in proc.stdout  # the printed table


def test_gpu_check_without_cuda_says_so(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "launch.gpu_check", "--out", str(tmp_path / "x.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no CUDA device" in proc.stderr
