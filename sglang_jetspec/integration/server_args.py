"""JETSPEC server arguments: defaults from the head config, one startup validation.

SGLang's generic speculative flags carry the tree settings:
  --speculative-num-draft-tokens  node budget B (root included)       default 32
  --speculative-eagle-topk        width W (top-W tokens per depth)    default 7
  --speculative-num-steps         depth D, 1 <= D <= block_size - 1   default block_size - 1
  --speculative-draft-model-path  the head folder (config.json + safetensors)

`apply_jetspec_server_args` runs in the launcher during argument resolution (through
JetSpecAlgo.handle_server_args); it collects every problem and raises ONE ValueError, so a
bad head folder stops the server at startup with a message naming each problem.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from sglang_jetspec.core.head_config import HeadConfig

logger = logging.getLogger(__name__)

DEFAULT_BUDGET = 32
DEFAULT_WIDTH = 7
CPU_VERIFY_BACKEND = "jetspec_torch_native"  # registered by cpu_support
_CPU_REPLACEABLE = (None, "torch_native", "intel_amx", CPU_VERIFY_BACKEND)
_GPU_BACKENDS = ("triton", "flashinfer")  # read spec_info.custom_mask in FULL_MASK layout


@dataclass(frozen=True)
class TargetDims:
    hidden_size: int
    num_layers: int
    vocab_size: int


@dataclass(frozen=True)
class TreeSettings:
    budget: int  # nodes per tree, root included
    width: int
    depth: int


def check_budget_mode(environ=os.environ) -> list[str]:
    """SGLANG_JETSPEC_BUDGET (adaptive | static), SGLANG_JETSPEC_KV_RESERVE (follow | max) and
    SGLANG_JETSPEC_SAMPLING_RULE (rrs | walk), checked in the launcher so a typo stops the server
    at startup instead of in the scheduler."""
    from sglang_jetspec.integration import kv_reserve
    from sglang_jetspec.integration.budget_policy import mode_from_env
    from sglang_jetspec.integration.sampling_accept import rule_from_env

    errs = []
    for check in (mode_from_env, kv_reserve.mode_from_env, rule_from_env):
        try:
            check(environ)
        except ValueError as exc:
            errs.append(str(exc))
    return errs


def max_tree_nodes(width: int, depth: int, cap: int = 1 << 20) -> int:
    """Nodes of the full W-ary candidate tree of depth D, root included (capped)."""
    total, level = 1, 1
    for _ in range(depth):
        level = min(level * width, cap)
        total = min(total + level, cap)
    return total


def check_tree(tree: TreeSettings, block_size: int) -> list[str]:
    """Problems with the tree settings for a head of this block size (empty when fine)."""
    errs = []
    if tree.budget < 2:
        errs.append(f"--speculative-num-draft-tokens (budget) {tree.budget} must be >= 2 "
                    "(root + at least one draft); for plain decoding drop --speculative-algorithm")
    if tree.width < 1:
        errs.append(f"--speculative-eagle-topk (width) {tree.width} must be >= 1")
    if not 1 <= tree.depth <= block_size - 1:
        errs.append(f"--speculative-num-steps (depth) {tree.depth} must be in "
                    f"[1, block_size - 1 = {block_size - 1}]")
    elif tree.width >= 1 and tree.budget > max_tree_nodes(tree.width, tree.depth):
        errs.append(f"budget {tree.budget} exceeds the {max_tree_nodes(tree.width, tree.depth)} "
                    f"nodes of a width-{tree.width} depth-{tree.depth} tree")
    return errs


def check_head(head: HeadConfig, target: TargetDims) -> list[str]:
    """Problems with using this head on this target (empty when fine)."""
    errs = []
    try:
        head.check_target(target.hidden_size, target.num_layers, target.vocab_size)
    except ValueError as e:
        errs.append(str(e))
    if head.mask_token_id is None:
        errs.append("draft head config has no dflash_config.mask_token_id (the MASK input token)")
    # SGLang captures layer L's output as the input of layer L+1, so L = last layer is unreachable
    late = [i for i in head.target_layer_ids if i >= target.num_layers - 1]
    if late and not any("exceed target depth" in e for e in errs):
        errs.append(f"draft head target_layer_ids {late} cannot be captured: SGLang taps layer "
                    f"L's output at the input of layer L+1, so ids must be <= "
                    f"{target.num_layers - 2} for a {target.num_layers}-layer target")
    return errs


def resolve_attention_backend(device: str, backend: str | None) -> tuple[str | None, str | None]:
    """(backend to use, error). On CPU the torch backend is replaced by the tree-verify one."""
    if device == "cpu":
        if backend in _CPU_REPLACEABLE:
            return CPU_VERIFY_BACKEND, None
        if backend == "triton":
            if os.environ.get("TRITON_INTERPRET") != "1":
                return None, "attention backend 'triton' on CPU needs TRITON_INTERPRET=1"
            return "triton", None
        return None, (f"attention backend {backend!r} is not supported by JETSPEC on CPU "
                      f"(use torch_native, which becomes {CPU_VERIFY_BACKEND}, or triton)")
    if backend is None or backend in _GPU_BACKENDS:
        return backend, None
    return None, (f"attention backend {backend!r} is not supported by JETSPEC tree verify "
                  f"(supported: {', '.join(_GPU_BACKENDS)})")


def check_runtime(sa) -> list[str]:
    """Deployment features the phase-1 worker does not handle yet."""
    errs = []
    for flag, value in (("--tp-size", sa.tp_size), ("--pp-size", sa.pp_size), ("--dp-size", sa.dp_size)):
        if value not in (None, 1):
            errs.append(f"{flag} {value} is not supported by JETSPEC yet (only 1)")
    if sa.page_size not in (None, 1):
        errs.append(f"--page-size {sa.page_size} is not supported by JETSPEC yet (only 1)")
    if getattr(sa, "disaggregation_mode", "null") not in (None, "null"):
        errs.append("PD disaggregation is not supported by JETSPEC yet")
    return errs


def target_text_config(sa):
    from sglang.srt.utils.hf_transformers_utils import get_config

    cfg = get_config(sa.model_path, trust_remote_code=sa.trust_remote_code, revision=sa.revision)
    return getattr(cfg, "text_config", None) or cfg


def target_dims(sa, text=None) -> TargetDims:
    text = text if text is not None else target_text_config(sa)
    return TargetDims(text.hidden_size, text.num_hidden_layers, text.vocab_size)


def weight_problems(folder: str, head: HeadConfig) -> list[str]:
    from sglang_jetspec.core.checkpoint import weight_problems as problems

    return problems(folder, head)


def check_native_tree(environ=None) -> list[str]:
    """SGLANG_JETSPEC_NATIVE_TREE (on / off: the compiled or the Python draft-tree builders and
    expert-pruning greedy, core/tree_native.py): a typo stops the server at startup, not at the
    first tree."""
    from sglang_jetspec.core.tree_native import setting

    try:
        setting(environ)
    except ValueError as e:
        return [str(e)]
    return []


def load_head_config(path: str | None) -> HeadConfig:
    if not path:
        raise ValueError("JETSPEC needs --speculative-draft-model-path DIR (the draft head folder)")
    try:
        return HeadConfig.load(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"JETSPEC draft head {path!r}: {e}") from e


def apply_jetspec_server_args(sa) -> TreeSettings:
    """Fill JETSPEC defaults into `sa` (SGLang's recording view) and validate; raises
    ValueError listing every problem."""
    head = load_head_config(sa.speculative_draft_model_path)
    tree = TreeSettings(
        budget=sa.speculative_num_draft_tokens or DEFAULT_BUDGET,
        width=sa.speculative_eagle_topk or DEFAULT_WIDTH,
        depth=sa.speculative_num_steps or head.block_size - 1,
    )
    from sglang_jetspec.integration.expert_schedule import check_expert_mode, moe_shape

    text = target_text_config(sa)
    errs = check_tree(tree, head.block_size)
    errs += check_head(head, target_dims(sa, text))
    errs += check_expert_mode(text)
    errs += [f"draft head {e}" for e in weight_problems(sa.speculative_draft_model_path, head)]
    errs += check_runtime(sa)
    errs += check_budget_mode()
    from sglang_jetspec.integration.draft_vocab_setting import check_draft_vocab

    errs += check_draft_vocab(sa.speculative_draft_model_path, text.vocab_size, tree.width)
    from sglang_jetspec.integration.pair_prior_setting import check_pair_prior

    errs += check_pair_prior(sa.speculative_draft_model_path, text.vocab_size)
    errs += check_native_tree()
    backend, err = resolve_attention_backend(sa.device, sa.attention_backend)
    if err:
        errs.append(err)
    if errs:
        raise ValueError(f"JETSPEC cannot start with draft head {sa.speculative_draft_model_path!r}: "
                         + "; ".join(errs))

    sa.speculative_num_draft_tokens = tree.budget
    sa.speculative_eagle_topk = tree.width
    sa.speculative_num_steps = tree.depth
    switched = []  # what JETSPEC turns off, said out loud (never silently)
    if not sa.disable_overlap_schedule:
        switched.append("overlap scheduling (the JETSPEC worker runs SGLang's synchronous loop)")
    sa.disable_overlap_schedule = True
    if sa.enable_mixed_chunk:
        switched.append("--enable-mixed-chunk (a mixed batch would need a split extend/verify round)")
    sa.enable_mixed_chunk = False
    if sa.attention_backend != backend:
        if sa.attention_backend is not None:
            switched.append(f"attention backend {sa.attention_backend} -> {backend} (tree-mask verify)")
        sa.attention_backend = backend
    for field in ("prefill_attention_backend", "decode_attention_backend"):
        if getattr(sa, field) not in (None, backend):  # a split choice would skip tree verify
            switched.append(f"--{field.replace('_', '-')} {getattr(sa, field)} -> {backend}")
            setattr(sa, field, backend)
    if moe_shape(text) is not None and not getattr(sa, "enable_return_routed_experts", False):
        # expert-aware scheduling (expert_schedule.py) learns from the experts each verify routed to
        sa.enable_return_routed_experts = True
        logger.info("JETSPEC turns on --enable-return-routed-experts (MoE target: expert-aware "
                    "tree scheduling reads the experts every verify routed to)")
    if _disable_decode_graphs(sa):
        switched.append("decode CUDA graphs (no graph runner for plugin verify inputs yet)")
    for what in switched:
        logger.warning("JETSPEC switches off/replaces: %s", what)
    logger.info("JETSPEC: head %s, budget %d, width %d, depth %d, attention %s",
                sa.speculative_draft_model_path, tree.budget, tree.width, tree.depth, backend)
    return tree


def _disable_decode_graphs(sa) -> bool:
    """SGLang's decode graph runner has no verify input for plugin algorithms: run eagerly.
    Returns whether graphs were on."""
    from sglang.srt.model_executor.cuda_graph_config import Backend, Phase, with_phase

    cfg = getattr(sa, "cuda_graph_config", None)
    if cfg is None:
        return False
    if cfg.decode.backend != Backend.DISABLED:
        sa.cuda_graph_config = with_phase(cfg, Phase.DECODE, backend=Backend.DISABLED)
        return True
    return False
