"""JETSPEC startup validation: defaults from the head config, one error naming every problem."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sglang_jetspec.core.head_config import HeadConfig
from sglang_jetspec.integration.server_args import (
    CPU_VERIFY_BACKEND, TargetDims, TreeSettings, apply_jetspec_server_args, check_head,
    check_tree, max_tree_nodes, resolve_attention_backend,
)

ROOT = Path(__file__).resolve().parents[1]
SMOL = TargetDims(576, 30, 49152)  # SmolLM2-135M, the embedded target (smollm2_dir fixture)


def _head(**kw):
    args = dict(target_hidden_size=576, target_num_layers=30, vocab_size=49152, num_layers=1,
                mask_token_id=16)
    args.update(kw)
    return HeadConfig.for_target(**args)


def _save(cfg, folder) -> None:
    """A complete head folder (config + weights) for `cfg`."""
    from sglang_jetspec.core.checkpoint import save_head
    from sglang_jetspec.core.head import DraftHead

    save_head(DraftHead(cfg), str(folder))


def test_max_tree_nodes():
    assert max_tree_nodes(1, 5) == 6
    assert max_tree_nodes(2, 3) == 15
    assert max_tree_nodes(7, 15) == 1 << 20  # capped, no overflow


@pytest.mark.parametrize("tree, fragment", [
    (TreeSettings(1, 7, 15), "budget) 1 must be >= 2"),
    (TreeSettings(8, 0, 15), "width) 0 must be >= 1"),
    (TreeSettings(8, 7, 16), "depth) 16 must be in [1, block_size - 1 = 15]"),
    (TreeSettings(8, 7, 0), "depth) 0 must be in"),
    (TreeSettings(16, 2, 3), "budget 16 exceeds the 15 nodes of a width-2 depth-3 tree"),
])
def test_bad_tree_settings_are_named(tree, fragment):
    errs = check_tree(tree, block_size=16)
    assert len(errs) == 1 and fragment in errs[0], errs


def test_good_tree_settings_pass():
    assert check_tree(TreeSettings(15, 2, 3), 16) == []
    assert check_tree(TreeSettings(32, 7, 15), 16) == []


def test_head_target_mismatch_is_named():
    errs = check_head(_head(target_hidden_size=960), SMOL)
    assert any("target_hidden_size 960 does not match target hidden_size 576" in e for e in errs)
    errs = check_head(_head(vocab_size=32000, mask_token_id=3), SMOL)
    assert any("vocab_size 32000 does not match" in e for e in errs)


def test_missing_mask_token_is_named():
    errs = check_head(_head(mask_token_id=None), SMOL)
    assert errs == ["draft head config has no dflash_config.mask_token_id (the MASK input token)"]


def test_last_layer_cannot_be_tapped():
    errs = check_head(_head(target_layer_ids=[3, 29]), SMOL)
    assert len(errs) == 1 and "target_layer_ids [29] cannot be captured" in errs[0]
    assert "<= 28" in errs[0]
    assert check_head(_head(target_layer_ids=[3, 28]), SMOL) == []


def test_attention_backend_choice():
    for given in (None, "torch_native", "intel_amx", CPU_VERIFY_BACKEND):
        assert resolve_attention_backend("cpu", given) == (CPU_VERIFY_BACKEND, None)
    backend, err = resolve_attention_backend("cpu", "flashinfer")
    assert backend is None and "'flashinfer' is not supported by JETSPEC on CPU" in err
    assert resolve_attention_backend("cuda", "triton") == ("triton", None)
    backend, err = resolve_attention_backend("cuda", "fa3")
    assert backend is None and "'fa3' is not supported" in err


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "TRITON_INTERPRET=1" in resolve_attention_backend("cpu", "triton")[1]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_attention_backend("cpu", "triton") == ("triton", None)


def _args(head_dir, target=ROOT, **kw):
    sa = SimpleNamespace(
        speculative_draft_model_path=str(head_dir), speculative_num_draft_tokens=None,
        speculative_eagle_topk=None, speculative_num_steps=None, model_path=str(target),
        trust_remote_code=False, revision=None, tp_size=1, pp_size=1, dp_size=1, page_size=1,
        disaggregation_mode="null", device="cpu", attention_backend="torch_native",
        prefill_attention_backend=None, decode_attention_backend=None, cuda_graph_config=None,
        disable_overlap_schedule=False, enable_mixed_chunk=True)
    sa.__dict__.update(kw)
    return sa


def test_defaults_come_from_the_head(tmp_path, smollm2_dir, caplog):
    _save(_head(block_size=8), tmp_path)
    sa = _args(tmp_path, smollm2_dir)
    with caplog.at_level("WARNING"):
        tree = apply_jetspec_server_args(sa)
    said = caplog.text  # what JETSPEC switched off is logged, never silent
    assert "overlap scheduling" in said and "--enable-mixed-chunk" in said, said
    assert tree == TreeSettings(32, 7, 7)
    assert (sa.speculative_num_draft_tokens, sa.speculative_eagle_topk, sa.speculative_num_steps) == (32, 7, 7)
    assert sa.disable_overlap_schedule is True and sa.enable_mixed_chunk is False
    assert sa.attention_backend == CPU_VERIFY_BACKEND


def test_one_error_lists_every_problem(tmp_path, smollm2_dir):
    _save(_head(mask_token_id=None, target_layer_ids=[29]), tmp_path)
    sa = _args(tmp_path, smollm2_dir, speculative_num_steps=20, tp_size=2, attention_backend="fa3")
    with pytest.raises(ValueError) as info:
        apply_jetspec_server_args(sa)
    msg = str(info.value)
    for fragment in ("depth) 20", "no dflash_config.mask_token_id", "[29] cannot be captured",
                     "--tp-size 2", "'fa3' is not supported"):
        assert fragment in msg, msg


def test_a_typo_in_the_tree_builder_switch_stops_startup_without_a_prior(tmp_path, smollm2_dir, monkeypatch):
    _save(_head(), tmp_path)  # no pair_prior.safetensors: plain trees, built natively too
    monkeypatch.setenv("SGLANG_JETSPEC_NATIVE_TREE", "fast")
    with pytest.raises(ValueError, match="SGLANG_JETSPEC_NATIVE_TREE='fast' must be one of"):
        apply_jetspec_server_args(_args(tmp_path, smollm2_dir))
    monkeypatch.setenv("SGLANG_JETSPEC_NATIVE_TREE", "off")
    assert apply_jetspec_server_args(_args(tmp_path, smollm2_dir))


def test_missing_or_broken_head_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="needs --speculative-draft-model-path"):
        apply_jetspec_server_args(_args(None, speculative_draft_model_path=None))
    with pytest.raises(ValueError, match="has no config.json"):
        apply_jetspec_server_args(_args(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match="missing required field"):
        apply_jetspec_server_args(_args(tmp_path))


def test_weight_problems_are_named_from_the_headers(tmp_path, smollm2_dir):
    from safetensors.torch import load_file, save_file

    cfg = _head()
    _save(cfg, tmp_path)
    assert apply_jetspec_server_args(_args(tmp_path, smollm2_dir))  # complete folder: fine
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    state.pop("fc.weight")
    state["layers.0.mlp.up_proj.weight"] = state["layers.0.mlp.up_proj.weight"][:7]
    state["extra.bias"] = torch.zeros(3)
    save_file(state, str(weights))
    with pytest.raises(ValueError) as info:
        apply_jetspec_server_args(_args(tmp_path, smollm2_dir))
    msg = str(info.value)
    for fragment in ("miss 1 tensors", "'fc.weight'", "unexpected tensors", "'extra.bias'",
                     "layers.0.mlp.up_proj.weight is [7, 576]"):
        assert fragment in msg, msg
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors is not readable safetensors"):
        apply_jetspec_server_args(_args(tmp_path, smollm2_dir))
    weights.unlink()
    with pytest.raises(ValueError, match="no weights: neither model.safetensors"):
        apply_jetspec_server_args(_args(tmp_path, smollm2_dir))


# each bad head folder the real launcher must refuse at startup, and what its message must say
BAD_HEADS = {
    "wrong hidden size": (dict(target_hidden_size=960), "target_hidden_size 960 does not match target hidden_size 576"),
    "missing mask token": (dict(mask_token_id=None), "no dflash_config.mask_token_id"),
    "bad layer ids": (dict(target_layer_ids=[3, 29]), "[29] cannot be captured"),
    "missing weights": (dict(), "no weights: neither model.safetensors"),
}
# speculative flags out of range (with a good head): refused at startup, named
BAD_FLAGS = {
    "budget over the tree": (["--speculative-num-draft-tokens", "1000", "--speculative-eagle-topk", "2",
                              "--speculative-num-steps", "3"], "budget 1000 exceeds the 15 nodes"),
    "depth over the block": (["--speculative-num-steps", "16"], "depth) 16 must be in [1, block_size - 1 = 15]"),
}


@pytest.mark.slow
def test_real_server_exits_at_startup_naming_the_problem(tmp_path, smollm2_dir):
    """The real launcher, once per bad head folder and per out-of-range speculative flag (run side
    by side): it exits non-zero at startup with a message naming the problem."""
    env = dict(os.environ, SGLANG_USE_CPU_ENGINE="1", OMP_NUM_THREADS="1",
               XDG_CACHE_HOME=str(ROOT / "build" / "xdg-cache"), HF_HUB_OFFLINE="1")
    procs = {}
    good = tmp_path / "good-head"
    _save(_head(), good)
    cases = {case: (kw, [], msg) for case, (kw, msg) in BAD_HEADS.items()}
    cases.update({case: (None, flags, msg) for case, (flags, msg) in BAD_FLAGS.items()})
    for i, (case, (kw, flags, _)) in enumerate(cases.items()):
        folder = good
        if kw is not None:
            folder = tmp_path / f"head{i}"
            _save(_head(**kw), folder)
            if case == "missing weights":
                (folder / "model.safetensors").unlink()
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(smollm2_dir),
               "--device", "cpu", "--port", str(31079 + i), "--host", "127.0.0.1",
               "--speculative-algorithm", "JETSPEC", "--speculative-draft-model-path", str(folder), *flags]
        procs[case] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    failures = []
    for case, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            failures.append(f"{case}: the server did not exit at startup")
            continue
        if proc.returncode == 0 or cases[case][2] not in out:
            failures.append(f"{case}: rc {proc.returncode}, message missing {cases[case][2]!r}:\n{out[-1500:]}")
    assert not failures, "\n".join(failures)
