"""Export a finished run and write down what it is: README.md + training_report.json.

Every number is measured on the exported (bf16-rounded) weights: held-out agreement with
SmolLM2 and router statistics, next to the same numbers for the untrained start (PCA embeddings,
random layers and routers), so a reader can see the router was learned, not left at its init.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import torch

from sglang_jetspec.train.dataset import load_sequences, split_validation
from sglang_jetspec.train.moe_target.config import MoeTargetSpec
from sglang_jetspec.train.moe_target.distill import LOG_NAME, DistillSettings, build_student, load_run
from sglang_jetspec.train.moe_target.evaluate import agreement
from sglang_jetspec.train.moe_target.export import export_checkpoint, round_to_bf16
from sglang_jetspec.train.moe_target.router_stats import collect_router_stats


def read_log(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, LOG_NAME)) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_train_numbers(records: list[dict], last: int = 25) -> dict:
    """Means over the last `last` logged steps (one step is 16 sequences: noisy)."""
    tail = records[-last:]
    mean = lambda key: round(sum(r[key] for r in tail) / len(tail), 4)  # noqa: E731
    return {"steps_averaged": len(tail), "loss": mean("loss"), "soft_kl": mean("soft_kl"),
            "hard_ce": mean("hard_ce"), "train_agree": mean("agree"), "balance": mean("balance")}


def export_with_report(run_dir: str, teacher_dir: str, out_dir: str, val_seqs: int = 130,
                       stats_seqs: int = 130, recipe: str | None = None) -> dict:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model, state = load_run(run_dir)
    round_to_bf16(model)
    saved = dict(state["settings"])
    settings = DistillSettings(**{**saved, "spec": MoeTargetSpec(**saved["spec"])})
    seqs = load_sequences(settings.data_dirs)
    train_seqs, val = split_validation(seqs, settings.val_percent)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    init = build_student(settings).eval()
    report = {
        "checkpoint": str(out_dir),
        "steps": int(state["step"]), "planned_steps": settings.steps,
        "train_wall_min": round(float(state["wall_s"]) / 60, 1),
        "train_sequences": len(train_seqs), "heldout_sequences_available": len(val),
        "final_train": final_train_numbers(read_log(run_dir)),
        "heldout": agreement(model, val[:val_seqs], teacher),
        "heldout_at_init": agreement(init, val[:val_seqs]),
        "router": collect_router_stats(model, [q.ids for q in val[:stats_seqs]]).as_dict(),
        "router_at_init": collect_router_stats(init, [q.ids for q in val[:stats_seqs]]).as_dict(),
        "settings": saved, "recipe": recipe,
    }
    export_checkpoint(model, teacher_dir, out_dir)
    shutil.copyfile(os.path.join(run_dir, LOG_NAME), os.path.join(out_dir, "train_log.jsonl"))
    report["size_bytes"] = os.path.getsize(os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "training_report.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(render_readme(report, model.config))
    return report


def _card_names(checkpoint: str) -> tuple[str, str | None]:
    """(folder name, its `launch.models` name or None) of an exported checkpoint folder."""
    from sglang_jetspec.model_store import shipped_model_names

    name = os.path.basename(os.path.normpath(str(checkpoint)))
    return name, shipped_model_names().get(name)


def _params(cfg) -> tuple[int, int]:
    """(total, active per token) parameter counts of a Qwen3-MoE config, embeddings included."""
    h, e, k, i = cfg.hidden_size, cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size
    attn = h * cfg.head_dim * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
    dense = 2 * cfg.vocab_size * h + cfg.num_hidden_layers * (attn + e * h)
    return dense + cfg.num_hidden_layers * e * 3 * h * i, dense + cfg.num_hidden_layers * k * 3 * h * i


def render_readme(report: dict, cfg) -> str:
    """The model card: what it is, how it was made (exact commands), and what it measures."""
    s, r, r0 = report["settings"], report["router"], report["router_at_init"]
    ev, ev0, ft = report["heldout"], report["heldout_at_init"], report["final_train"]
    total, active = _params(cfg)
    n = cfg.num_experts
    rows = "\n".join(
        f"| {i} | {r['load_entropy'][i]:.3f} ({math.exp(r['load_entropy'][i] * math.log(n)):.1f}) "
        f"| {r['reuse_any'][i]:.3f} | {r['reuse_all'][i]:.3f} "
        f"| {r0['load_entropy'][i]:.3f} | {r0['reuse_any'][i]:.3f} | {r0['reuse_all'][i]:.3f} |"
        for i in range(cfg.num_hidden_layers))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    recipe = report.get("recipe") or "(not recorded)"
    name, key = _card_names(report["checkpoint"])
    role = "the embedded Qwen3-MoE target" if key == "qwen3moe" else "a Qwen3-MoE target made by this project"
    where = f" `python -m launch.models path {key}` prints this folder." if key else ""
    return f"""# {name}: {role}

A small `Qwen3MoeForCausalLM` made by this project on a CPU, distilled from
SmolLM2-135M-Instruct (no PyPI package ships a pretrained MoE model, and random weights would
make expert-routing results meaningless). It shares SmolLM2's tokenizer, special tokens and chat
template.{where}

| | |
|---|---|
| layers | {cfg.num_hidden_layers}, every one a sparse MoE layer |
| experts | {n} per layer, top-{cfg.num_experts_per_tok}, softmax router, top-k weights renormalised |
| hidden / expert MLP | {cfg.hidden_size} / {cfg.moe_intermediate_size} (SwiGLU) |
| attention | {cfg.num_attention_heads} query heads, {cfg.num_key_value_heads} KV head, head_dim {cfg.head_dim}, q/k RMSNorm, rope theta {cfg.rope_parameters['rope_theta']:g} |
| vocabulary | {cfg.vocab_size} (SmolLM2's) |
| parameters | {total / 1e6:.1f}M total, {active / 1e6:.1f}M active per token |
| file | model.safetensors, bf16, {report['size_bytes'] / 1e6:.1f} MB |

`lm_head` is NOT tied to `embed_tokens` (`tie_word_embeddings: false`): SGLang's `qwen3_moe`
always loads its own `lm_head.weight`, so both matrices are in the file; that is why the hidden
size is {cfg.hidden_size} (two 49152 x {cfg.hidden_size} bf16 matrices are {2 * cfg.vocab_size * cfg.hidden_size * 2 / 1e6:.1f} MB of the
60 MB budget). Both started from the same projection of SmolLM2's embedding table onto its top
{cfg.hidden_size} principal directions; layers and routers started from a seeded random init.

## Recipe

```
{recipe}
```

- Data: `{', '.join(s['data_dirs'])}`, SmolLM2's own greedy answers (chat template, 160 new
  tokens at most) to the bundled code/math/chat training prompts. {report['train_sequences']} sequences
  train; the {s['val_percent']:g}% held out by prompt hash (`split_validation`, {report['heldout_sequences_available']} sequences)
  are never trained on.
- Objective per answer position: forward KL to SmolLM2's top-32 log-probs (plus one bucket for
  the rest of its mass) where the head-training feature cache `{s['feature_cache']}` has them
  (read only), else cross-entropy on SmolLM2's greedy token; full-vocabulary softmax, bf16
  projection, fp32 loss. Plus {s['balance_coef']:g} x the per-layer Switch load-balancing loss (mean over
  layers). Prompt positions carry no loss.
- Optimiser: AdamW (betas 0.9/0.95, weight decay {s['weight_decay']:g} on matrices), lr {s['lr']:g}, {s['warmup_steps']} warm-up
  steps then cosine to {s['min_lr_ratio']:g}x, gradient clip {s['grad_clip']:g}; {s['seqs_per_step']} sequences per step,
  {report['steps']} steps (about {report['steps'] * s['seqs_per_step'] / report['train_sequences']:.1f} epochs), seed {s['seed']}.
- Wall time: {report['train_wall_min']} min of training on ONE CPU thread of a 2-core machine that other jobs
  shared at the same time (resumable: `state.pt` in the run folder, batches are a pure function of
  seed and step).
- Final training numbers (mean of the last {ft['steps_averaged']} steps): loss {ft['loss']}, KL to the top-32
  teacher {ft['soft_kl']}, CE on greedy tokens {ft['hard_ce']}, balance loss {ft['balance']} (1.0 = even).

## Held-out agreement with SmolLM2

Teacher-forced on {ev['sequences']} held-out sequences ({ev['rows']} answer positions), exported bf16 weights in fp32:

| | this checkpoint | untrained start |
|---|---|---|
| argmax = SmolLM2's argmax | {ev['agree_with_teacher']:.3f} | {ev0['agree_with_data']:.3f} |
| KL(SmolLM2 \\|\\| this), nats per position | {ev['kl_teacher_student']:.3f} | |

(SmolLM2's own argmax equals the stored greedy token at {ev['teacher_argmax_is_data']:.3f} of the positions.)

## Router statistics

Same held-out sequences, {r['tokens']} tokens, the experts each layer's router picks per token.
Load entropy is normalised by log({n}) (1 = even load; the effective number of experts exp(H) in
brackets; a router collapsed on its top-{cfg.num_experts_per_tok} would give {math.log(cfg.num_experts_per_tok) / math.log(n):.3f}). Reuse: how often
consecutive tokens share at least one / all of their experts; a router drawing uniform random
sets would give {r['random_any']:.3f} / {r['random_all']:.3f}.

| layer | load entropy (exp H) | reuse >= 1 | reuse all | at init: entropy | reuse >= 1 | reuse all |
|---|---|---|---|---|---|---|
{rows}
| mean | {mean(r['load_entropy']):.3f} | {mean(r['reuse_any']):.3f} | {mean(r['reuse_all']):.3f} | {mean(r0['load_entropy']):.3f} | {mean(r0['reuse_any']):.3f} | {mean(r0['reuse_all']):.3f} |

Per-expert load shares and every number above: `training_report.json`; the run's per-step log
(loss, agreement, balance, seconds per step, held-out agreement every 100 steps): `train_log.jsonl`.

## What it is for

A target for MoE-aware speculative decoding tests and expert-routing measurements, not an
assistant: with {active / 1e6:.1f}M active parameters trained for under an hour its greedy answers are fluent
but often wrong. What matters here holds: it is SmolLM2-like (same tokenizer and template, half
of SmolLM2's next tokens), its routers are trained, every expert carries load, and sending
tokens to other experts (router rows permuted) more than halves its agreement with SmolLM2
(`tests/test_moe_target.py`).

## Serving

```
OMP_NUM_THREADS=1 python -m sglang.launch_server --model-path models/{name} --device cpu \\
    --dtype float32 --attention-backend torch_native --host 127.0.0.1 --port 30000 \\
    --skip-server-warmup --max-total-tokens 4096
```
On a machine without a GPU the installed plugin's CPU support is enough: SGLang then runs the
MoE layers on its pure-torch paths (`fused_topk_torch_native`, `moe_forward_native`). Greedy
output equals transformers' fp32 greedy (`tests/test_moe_target.py`).
"""
