"""Distil SmolLM2-135M-Instruct into the small Qwen3-MoE target on one CPU thread, resumably.

Objective per answer row: KL to SmolLM2's cached top-k log-probs where the feature cache has
the row, else cross-entropy on SmolLM2's greedy token (the data); plus `balance_coef` times the
per-layer Switch balance loss, which is what makes the router spread tokens over its experts
instead of collapsing (the router itself learns through the renormalised top-k weights).

Resumable: `run_dir/state.pt` holds the fp32 weights, optimiser, scheduler, step and the wall
time spent so far; batches are a pure function of (seed, step), so an interrupted and resumed
run trains on exactly the batches of an uninterrupted one. Progress goes to `run_dir/log.jsonl`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import torch

from sglang_jetspec.train.dataset import load_sequences, split_validation
from sglang_jetspec.train.feature_cache import META_NAME, FeatureCache
from sglang_jetspec.train.moe_target.config import MoeTargetSpec, build_config, init_student
from sglang_jetspec.train.moe_target.data import batch_for_step, make_batch
from sglang_jetspec.train.moe_target.evaluate import agreement
from sglang_jetspec.train.moe_target.losses import balance_loss, vocab_loss_backward
from sglang_jetspec.train.schedule import build_optimizer, warmup_cosine
from sglang_jetspec.train.memory import return_big_buffers_to_os

STATE_NAME = "state.pt"
LOG_NAME = "log.jsonl"


@dataclass
class DistillSettings:
    run_dir: str
    teacher_dir: str
    data_dirs: list[str]
    feature_cache: str | None = None
    steps: int = 750
    seqs_per_step: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.01
    balance_coef: float = 0.1
    grad_clip: float = 1.0
    val_percent: float = 3.0
    eval_every: int = 100
    eval_seqs: int = 24
    save_every: int = 25
    seed: int = 0
    threads: int = 1
    time_budget_min: float | None = None
    spec: MoeTargetSpec = field(default_factory=MoeTargetSpec)

    def __post_init__(self):
        if self.steps < 1 or self.seqs_per_step < 1:
            raise ValueError(f"steps {self.steps} and seqs_per_step {self.seqs_per_step} must be >= 1")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise ValueError(f"time budget {self.time_budget_min} min must be > 0")


def open_teacher_cache(folder: str) -> FeatureCache:
    """The head-training feature cache, READ-ONLY (its meta is read, never written)."""
    with open(os.path.join(folder, META_NAME)) as f:
        meta = json.load(f)
    if not str(meta.get("model", "")).rstrip("/").endswith("smollm2"):
        raise ValueError(f"feature cache {folder} holds teacher {meta.get('model')!r}; expected SmolLM2")
    return FeatureCache(folder, meta["layer_ids"], int(meta["topk"]))


def load_teacher_embedding(teacher_dir: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(os.path.join(teacher_dir, "model.safetensors"), "pt") as f:
        return f.get_tensor("model.embed_tokens.weight").float()  # [V, D]


def build_student(s: DistillSettings):
    from transformers import AutoConfig

    teacher_cfg = AutoConfig.from_pretrained(s.teacher_dir)
    model = init_student(build_config(s.spec, teacher_cfg), load_teacher_embedding(s.teacher_dir), s.seed)
    return model


def _save(run_dir: str, model, opt, sched, step: int, wall_s: float, settings: DistillSettings) -> None:
    state = {"step": step, "wall_s": wall_s, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "settings": asdict(settings)}
    path = os.path.join(run_dir, STATE_NAME)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def _truncate_log(run_dir: str, step: int) -> None:
    """Drop log records past the saved step: a killed run logged steps it will now redo."""
    path = os.path.join(run_dir, LOG_NAME)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(keep)
    os.replace(path + ".tmp", path)


def load_run(run_dir: str):
    """(model fp32 from run_dir/state.pt, state dict) of a run; for export and evaluation."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    state = torch.load(os.path.join(run_dir, STATE_NAME), map_location="cpu", weights_only=False)
    model = Qwen3MoeForCausalLM(Qwen3MoeConfig.from_pretrained(run_dir)).float()
    model.load_state_dict(state["model"])
    return model.eval(), state


RESUME_KEYS = ("steps", "seqs_per_step", "lr", "min_lr_ratio", "warmup_steps", "weight_decay",
               "balance_coef", "grad_clip", "val_percent", "seed", "data_dirs", "feature_cache", "spec")


def check_resume(saved: dict, s: DistillSettings) -> None:
    """A resumed run must train the same recipe; only threads, budget and logging may change."""
    now = asdict(s)
    diff = {k: (saved.get(k), now[k]) for k in RESUME_KEYS if saved.get(k) != now[k]}
    if diff:
        raise ValueError(f"{s.run_dir} was started with other settings (saved, now): {diff}; "
                         f"use the same settings or another run folder")


def _step(model, batch, balance_coef: float) -> dict:
    cfg = model.config
    out = model.model(input_ids=batch.ids, attention_mask=batch.attention,
                      output_router_logits=True, use_cache=False)
    hidden = out.last_hidden_state  # [B, T, h]
    grad, stats = vocab_loss_backward(hidden, model.lm_head, batch.soft_rows, batch.soft_ids, batch.soft_lp,
                                      batch.hard_rows, batch.hard_targets, scale=1.0 / batch.num_rows)
    real = batch.attention.reshape(-1).bool()  # [B*T]
    bal = torch.stack([balance_loss(x.reshape(-1, cfg.num_experts)[real], cfg.num_experts_per_tok)
                       for x in out.router_logits]).mean()
    ((hidden * grad).sum() + balance_coef * bal).backward()
    stats["balance"] = float(bal.detach())
    return stats


def train(s: DistillSettings, log=print) -> dict:
    """Train until s.steps or the time budget; returns the last log record."""
    torch.set_num_threads(s.threads)
    return_big_buffers_to_os()
    os.makedirs(s.run_dir, exist_ok=True)
    seqs = load_sequences(s.data_dirs)
    train_seqs, val_seqs = split_validation(seqs, s.val_percent)
    cache = open_teacher_cache(s.feature_cache) if s.feature_cache else None
    lengths = [len(q.ids) for q in train_seqs]

    state_path = os.path.join(s.run_dir, STATE_NAME)
    if os.path.isfile(state_path):
        model, state = load_run(s.run_dir)
        model.train()
    else:
        model, state = build_student(s), None
        model.config.save_pretrained(s.run_dir)
    opt = build_optimizer(model, s.lr, s.weight_decay)
    sched = warmup_cosine(opt, s.warmup_steps, s.steps, s.min_lr_ratio)
    step, wall_before = 0, 0.0
    if state is not None:
        check_resume(state["settings"], s)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, wall_before = int(state["step"]), float(state["wall_s"])
        log(f"resumed at step {step} ({wall_before / 60:.1f} min trained)")
        _truncate_log(s.run_dir, step)
    pad_id = model.config.pad_token_id
    t0 = time.time()
    record: dict = {}
    with open(os.path.join(s.run_dir, LOG_NAME), "a") as logf:
        while step < s.steps:
            if s.time_budget_min is not None and time.time() - t0 > s.time_budget_min * 60:
                log(f"time budget {s.time_budget_min} min reached at step {step}")
                break
            ts = time.time()
            idx = batch_for_step(lengths, s.seqs_per_step, s.seed, step)
            picked = [train_seqs[i] for i in idx]
            teachers = [cache.get(q.ids)[1] if cache is not None and q.ids in cache else None for q in picked]
            batch = make_batch(picked, teachers, pad_id)
            model.train()
            stats = _step(model, batch, s.balance_coef)
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            n_soft, n_hard = len(batch.soft_rows), len(batch.hard_rows)
            record = {"step": step, "lr": sched.get_last_lr()[0],
                      "soft_kl": round(stats["soft_kl_sum"] / max(n_soft, 1), 4),
                      "hard_ce": round(stats["hard_ce_sum"] / max(n_hard, 1), 4),
                      "loss": round((stats["soft_kl_sum"] + stats["hard_ce_sum"]) / batch.num_rows, 4),
                      "agree": round(stats["agree_sum"] / batch.num_rows, 4),
                      "balance": round(stats["balance"], 4), "soft_rows": n_soft, "hard_rows": n_hard,
                      "tokens": int(batch.attention.sum()), "s_step": round(time.time() - ts, 2),
                      "wall_s": round(wall_before + time.time() - t0, 1)}
            if s.eval_every and (step % s.eval_every == 0 or step == s.steps):
                model.eval()
                record["val"] = agreement(model, val_seqs[: s.eval_seqs])
            logf.write(json.dumps(record) + "\n")
            logf.flush()
            if step % s.save_every == 0 or step == s.steps:
                _save(s.run_dir, model, opt, sched, step, wall_before + time.time() - t0, s)
    if step % s.save_every and step < s.steps:
        _save(s.run_dir, model, opt, sched, step, wall_before + time.time() - t0, s)
    return record
