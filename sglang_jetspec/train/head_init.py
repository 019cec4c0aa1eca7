"""A fresh head shaped like the target's own decoder layers, optionally started FROM them.

Why: trained from random weights the head first spends hundreds of steps learning to read the
context at all (training-notes.md). Copying the target's last decoder layers gives it working
attention and MLPs from step 0, and `fc` starts as "take the deepest tapped layer" so the
context keys/values are exactly what the first copied layer sees in the target when that tap is
the layer just below it (default for a 2-layer head on SmolLM2: taps [1, 27], copies 28 and 29).
The published layout is kept: only initial values change.
"""

from __future__ import annotations

import torch

from sglang_jetspec.core.head import DraftHead
from sglang_jetspec.core.head_config import HeadConfig


def target_rope_theta(cfg) -> float:
    """rope_theta of a transformers config (top level in older versions, rope_parameters in newer)."""
    for key in ("rope_parameters", "rope_scaling"):
        sub = getattr(cfg, key, None)
        if isinstance(sub, dict) and "rope_theta" in sub:
            kind = sub.get("rope_type", sub.get("type", "default"))
            if kind not in (None, "default"):
                raise ValueError(f"target {key} rope_type {kind!r}: the head implements default rotary only")
            return float(sub["rope_theta"])
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:
        raise ValueError("target config has no rope_theta")
    return float(theta)


def head_config_for_target(target_cfg, num_layers: int = 2, block_size: int = 16, causal: bool = True,
                           mask_token_id: int | None = None, target_layer_ids: list[int] | None = None,
                           num_target_ids: int | None = None, intermediate_size: int | None = None) -> HeadConfig:
    """Head config whose layers have the target's exact shapes (so they can be copied). The MLP
    width defaults to the target's intermediate_size; a Qwen3-MoE target never uses that dense
    width (every layer is sparse), so it may be set: the MLP then starts from several experts."""
    heads = target_cfg.num_attention_heads
    head_dim = getattr(target_cfg, "head_dim", None) or target_cfg.hidden_size // heads
    vocab = target_cfg.vocab_size
    return HeadConfig.for_target(
        target_hidden_size=target_cfg.hidden_size, target_num_layers=target_cfg.num_hidden_layers,
        vocab_size=vocab, num_layers=num_layers, hidden_size=target_cfg.hidden_size,
        num_attention_heads=heads, num_key_value_heads=target_cfg.num_key_value_heads, head_dim=head_dim,
        intermediate_size=intermediate_size or target_cfg.intermediate_size, target_layer_ids=target_layer_ids,
        num_target_ids=num_target_ids, block_size=block_size, causal_head=causal,
        mask_token_id=mask_token_id, rope_theta=target_rope_theta(target_cfg),
        rms_norm_eps=float(target_cfg.rms_norm_eps),
        max_position_embeddings=int(getattr(target_cfg, "max_position_embeddings", 40960)),
    )


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:
        raise ValueError(f"cannot initialise head {name} {list(dst.shape)} from target {list(src.shape)}; "
                         "use a head with the target's layer shapes or --no-init-from-target")
    dst.copy_(src.detach().to(dst.dtype))


def _expert_weights(experts, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gate [I, d], up [I, d], down [d, I]) of expert e: fused 3D parameters (transformers >= 5:
    gate_up_proj [E, 2I, d] with gate first, down_proj [E, d, I]) or a list of dense MLPs."""
    if hasattr(experts, "gate_up_proj"):
        gate, up = experts.gate_up_proj[e].chunk(2, dim=0)
        return gate, up, experts.down_proj[e]
    mlp = experts[e]
    return mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight


def dense_mlp_weights(mlp, intermediate_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gate [I, d], up [I, d], down [d, I]) of a dense SwiGLU MLP with I = intermediate_size that
    starts as the target layer's MLP.

    A dense target MLP is returned as is. A sparse MoE block (a router over `experts`, e.g.
    Qwen3-MoE) has no single dense MLP: the head's MLP then starts as the AVERAGE of the first
    n = intermediate_size // expert width experts (their channels side by side, down_proj / n),
    about the size of a routed output (top-k weights sum to 1); channels left over start with
    output 0 (down_proj columns 0) and small random gate/up.
    Which experts does not matter much for a load-balanced router. Shapes are checked by _copy.
    """
    if not hasattr(mlp, "experts"):
        return mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
    experts = mlp.experts
    num = experts.gate_up_proj.shape[0] if hasattr(experts, "gate_up_proj") else len(experts)
    width = _expert_weights(experts, 0)[0].shape[0]
    n = min(num, intermediate_size // width)
    if n < 1:
        raise ValueError(f"cannot initialise a head MLP of intermediate_size {intermediate_size} from "
                         f"MoE experts of width {width}; use a wider head MLP or --no-init-from-target")
    gate0, _, down0 = _expert_weights(experts, 0)
    # leftover channels: small random gate/up (so they get gradients), zero down (no output yet)
    gate = gate0.new_empty(intermediate_size, gate0.shape[1]).normal_(0.0, 0.02)  # [I, d]
    up = torch.empty_like(gate).normal_(0.0, 0.02)
    down = down0.new_zeros(down0.shape[0], intermediate_size)  # [d, I]
    for e in range(n):
        g, u, d = _expert_weights(experts, e)
        sl = slice(e * width, (e + 1) * width)
        gate[sl], up[sl], down[:, sl] = g, u, d / n
    return gate, up, down


@torch.no_grad()
def init_head_from_target(head: DraftHead, model, source_layers: list[int] | None = None) -> list[int]:
    """Copy target decoder layers into the head (default: the target's last num_layers layers).

    Copies q/k/v/o, the MLP (an average of experts for a sparse MoE layer: dense_mlp_weights)
    and both layer norms (q_norm/k_norm too when the target has them, else they stay 1), the
    final norm; `fc` = identity on the deepest tapped layer's slice,
    `hidden_norm` = the first copied layer's input norm. Returns the copied target layer ids.
    WARNING: overwrites the head's weights in place.
    """
    cfg = head.config
    layers = model.base_model.layers
    n_target = len(layers)
    if source_layers is None:
        source_layers = list(range(n_target - cfg.num_hidden_layers, n_target))
    if len(source_layers) != cfg.num_hidden_layers or not all(0 <= i < n_target for i in source_layers):
        raise ValueError(f"source layers {source_layers}: need {cfg.num_hidden_layers} ids in [0, {n_target})")
    for j, (hl, i) in enumerate(zip(head.layers, source_layers)):
        tl = layers[i]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            _copy(getattr(hl.self_attn, proj).weight, getattr(tl.self_attn, proj).weight, f"layers.{j}.self_attn.{proj}")
            hb, tb = getattr(hl.self_attn, proj).bias, getattr(tl.self_attn, proj).bias
            if hb is not None and tb is not None:
                _copy(hb, tb, f"layers.{j}.self_attn.{proj}.bias")
        for nm in ("q_norm", "k_norm"):
            t_norm = getattr(tl.self_attn, nm, None)
            getattr(hl.self_attn, nm).weight.fill_(1.0) if t_norm is None else \
                _copy(getattr(hl.self_attn, nm).weight, t_norm.weight, f"layers.{j}.self_attn.{nm}")
        for proj, w in zip(("gate_proj", "up_proj", "down_proj"), dense_mlp_weights(tl.mlp, cfg.intermediate_size)):
            _copy(getattr(hl.mlp, proj).weight, w, f"layers.{j}.mlp.{proj}")
        _copy(hl.input_layernorm.weight, tl.input_layernorm.weight, f"layers.{j}.input_layernorm")
        _copy(hl.post_attention_layernorm.weight, tl.post_attention_layernorm.weight,
              f"layers.{j}.post_attention_layernorm")
    _copy(head.norm.weight, model.base_model.norm.weight, "norm")
    _copy(head.hidden_norm.weight, layers[source_layers[0]].input_layernorm.weight, "hidden_norm")
    d, dt = cfg.hidden_size, cfg.target_hidden_size
    if d != dt:
        raise ValueError(f"fc identity init needs head hidden_size {d} == target hidden_size {dt}")
    deepest = max(range(len(cfg.target_layer_ids)), key=lambda k: cfg.target_layer_ids[k])
    head.fc.weight.zero_()
    head.fc.weight[:, deepest * dt:(deepest + 1) * dt] = torch.eye(d)  # [d, K*d]
    return source_layers


def build_head(target_model, num_layers: int = 2, block_size: int = 16, causal: bool = True,
               mask_token_id: int | None = None, init_from_target: bool = True, seed: int = 0,
               target_layer_ids: list[int] | None = None, num_target_ids: int | None = None,
               recency_init: bool = False, calib_ids: torch.Tensor | None = None,
               recency_gain: float = 2.1, qk_scale_init: bool = False,
               intermediate_size: int | None = None) -> DraftHead:
    """A new fp32 head for `target_model` (a transformers causal LM), seeded; optionally started
    from the target's last layers (with their attention logit scale: match_qk_scale) and/or
    with layer 0's recency/anchor attention (init_recency_attention), both calibrated on the
    token sequence calib_ids [T]."""
    cfg = head_config_for_target(target_model.config, num_layers, block_size, causal, mask_token_id,
                                 target_layer_ids, num_target_ids, intermediate_size)
    torch.manual_seed(seed)
    head = DraftHead(cfg)
    _small_init(head)
    if init_from_target:
        copied = init_head_from_target(head, target_model)
        if qk_scale_init:
            if calib_ids is None:
                raise ValueError("qk_scale_init needs calib_ids (a token sequence to measure q/k scales on)")
            match_qk_scale(head, target_model, calib_ids, copied)
    elif qk_scale_init:
        raise ValueError("qk_scale_init matches copied target layers; it needs init_from_target")
    if recency_init:
        if calib_ids is None:
            raise ValueError("recency_init needs calib_ids (a token sequence to calibrate the probe on)")
        # the head is built on the CPU (same seeded values whatever the target's device); only
        # the calibration pass runs where the target lives
        dev = next(target_model.parameters()).device
        with torch.no_grad():
            out = target_model.base_model(input_ids=calib_ids.view(1, -1).to(dev), output_hidden_states=True,
                                          use_cache=False)
            feats = torch.cat([out.hidden_states[i + 1][0] for i in cfg.target_layer_ids], -1)  # [T, K*d]
            ctx = head.project_context(feats[None].float().cpu())[0]
        init_recency_attention(head, target_model.get_input_embeddings().weight.detach().float().cpu(), ctx,
                               recency_gain)
    return head


@torch.no_grad()
def _small_init(head: DraftHead, std: float = 0.02) -> None:
    """Transformer-style init (nn.Linear's default is too wide for a residual stack)."""
    for name, p in head.named_parameters():
        if p.dim() == 2:
            p.normal_(0.0, std)


def _rank_one_rows(weight: torch.Tensor, head: int, head_dim: int, direction: torch.Tensor) -> None:
    """Rows of head `head` map x to ones(head_dim) * (direction . x)."""
    weight[head * head_dim:(head + 1) * head_dim] = direction[None, :].expand(head_dim, -1)


@torch.no_grad()
def init_recency_attention(head: DraftHead, embed_weight: torch.Tensor, ctx: torch.Tensor,
                           gain: float = 2.1) -> dict:
    """Give head layer 0 a 'most recent context' head group and an 'anchor' head group.

    Why: a fresh head first has to find, among hundreds of context keys, the anchor and the
    latest positions; the prototype of training-notes.md spent thousands of steps there. Here
    the MASK slots (the ones graded) get, from step 0, queries that are one fixed vector per
    head, and keys that are the same fixed vector up to a sign (rank-1 k_proj rows followed by
    k_norm make |k| constant): rotary then turns q.k into a function of the distance alone,
    sum_j cos(theta_j * dist), which falls like -log(dist), so softmax gives a power-law
    recency (exponent ~0.7 * gain**2). The sign comes from a linear probe that separates
    token embeddings (+1) from context features (-1), with the MASK embedding projected out
    (MASK keys are 0, hence ignored). kv group 0 uses -probe (context visible, anchor
    suppressed): it reads the latest context; kv group 1 uses +probe: it reads the anchor.
    Only layer 0's q/k rows of those two kv groups and the q_norm/k_norm gains change.

    embed_weight [V, d]: the target's input embeddings; ctx [n, d]: projected context features
    (head.project_context of real target features). Returns probe diagnostics.
    """
    cfg = head.config
    if cfg.mask_token_id is None:
        raise ValueError("recency init needs the head's mask_token_id")
    if cfg.num_key_value_heads < 2:
        raise ValueError(f"recency init needs >= 2 kv heads, the head has {cfg.num_key_value_heads}")
    layer = head.layers[0]
    attn = layer.self_attn
    tokens = layer.input_layernorm(embed_weight.float())  # [V, d] what layer 0 sees for a token
    x_mask = tokens[cfg.mask_token_id]
    m_hat = x_mask / x_mask.norm()
    feats = torch.cat([tokens, ctx.float()])  # [V + n, d]
    labels = torch.cat([torch.ones(len(tokens)), -torch.ones(len(ctx))])
    w = torch.linalg.lstsq(feats, labels[:, None]).solution[:, 0]  # [d] probe
    w = w - (w @ m_hat) * m_hat  # MASK keys: exactly 0
    w = w / w.norm()
    hd, group = cfg.head_dim, cfg.num_attention_heads // cfg.num_key_value_heads
    q_dir = m_hat / x_mask.norm()  # MASK query -> ones(hd)
    for kv, sign in ((0, -1.0), (1, 1.0)):
        _rank_one_rows(attn.k_proj.weight, kv, hd, sign * w)
        for h in range(kv * group, (kv + 1) * group):
            _rank_one_rows(attn.q_proj.weight, h, hd, q_dir)
    attn.q_norm.weight.fill_(gain)
    attn.k_norm.weight.fill_(gain)
    return {"tokens_positive": float((tokens @ w > 0).float().mean()),
            "context_negative": float((ctx.float() @ w < 0).float().mean())}


@torch.no_grad()
def match_qk_scale(head: DraftHead, model, calib_ids: torch.Tensor, source_layers: list[int]) -> list[float]:
    """Set each copied layer's q_norm/k_norm gains to the RMS of that target layer's raw q and k.

    Why: the head normalises q and k per head (Qwen3 layout) while the copied Llama-style target
    layers do not, so with gains of 1 every attention logit is bounded by sqrt(head_dim) and
    sits far below the target's: the copied attention starts nearly uniform over hundreds of
    context keys and must first grow its gains at ~lr per step. Matching the gains to the RMS
    the target layer's q and k really have (measured on calib_ids [T]) restores the target's
    logit scale. Returns the gains per layer as [q0, k0, q1, k1, ...]. Layers whose target
    already has q_norm/k_norm are left alone. WARNING: overwrites those gains in place.
    """
    dev = next(model.parameters()).device
    out = model.base_model(input_ids=calib_ids.view(1, -1).to(dev), output_hidden_states=True, use_cache=False)
    gains = []
    for hl, i in zip(head.layers, source_layers):
        tl = model.base_model.layers[i]
        if getattr(tl.self_attn, "q_norm", None) is not None:
            continue
        x = tl.input_layernorm(out.hidden_states[i][0]).float()  # [T, d]: the layer's attention input
        for proj, norm in ((tl.self_attn.q_proj, hl.self_attn.q_norm), (tl.self_attn.k_proj, hl.self_attn.k_norm)):
            y = proj(x).view(len(x), -1, head.config.head_dim).cpu()  # [T, H, hd]
            rms = float(y.pow(2).mean().sqrt())
            norm.weight.fill_(rms)
            gains.append(rms)
    return gains
