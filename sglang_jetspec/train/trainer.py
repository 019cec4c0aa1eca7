"""The training loop: sample sequences and anchors, one teacher pass per sequence, KL step,
progress bar, periodic evaluation and resumable checkpoints.

Every step's randomness is a pure function of (seed, step, rank) (dataset.step_generator) and
the data order of (seed, epoch, rank), so a resumed run trains on exactly the batches an
uninterrupted run would have seen (as long as the data folders did not change).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from tqdm import tqdm

from sglang_jetspec.core.head import DraftHead
from sglang_jetspec.train import distributed as dist_util
from sglang_jetspec.train.checkpointing import load_training_state, save_training_state
from sglang_jetspec.train.dataset import TrainSequence, sample_anchors, shard_for_rank, step_generator
from sglang_jetspec.train.loss import CheapLoss, DraftForTraining, StepResult, block_loss
from sglang_jetspec.train.schedule import build_optimizer, warmup_cosine
from sglang_jetspec.train.teacher import FrozenTarget

LOG_NAME = "train_log.jsonl"


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seqs_per_step: int = 1
    anchors_per_seq: int = 64
    gamma: float = 0.0
    seed: int = 0
    eval_every: int = 100   # 0: no periodic evaluation
    save_every: int = 100   # 0: save only at the end
    # context-window curriculum: blocks see only the last `window_start` context positions at
    # first, widening linearly to the whole prefix at step `window_steps` (0 = off). Why: the
    # head must first find the most recent positions among hundreds (training-notes.md).
    window_start: int = 8
    window_steps: int = 0
    # wall-clock budget in seconds (0 = off): after `budget_probe_steps` steps the trainer measures
    # its step time and lowers `steps` so the run ends within the budget; the cosine schedule is
    # re-fitted to the new total, and the final count is printed and logged so that a rerun with
    # --steps N repeats the same run. Evaluations count against the budget.
    time_budget_s: float = 0.0
    budget_probe_steps: int = 10
    # end the run after this step (0 = after `steps`) while the learning-rate schedule still spans
    # `steps`: a checkpoint partway through a longer schedule, repeatable (the shipped SmolLM2 head
    # is step 1260 of a 2000-step cosine schedule, and its bidirectional twin must stop there too)
    stop_at: int = 0
    # bf16 autocast for the step (weights and optimiser stay fp32): "auto" = on a CUDA device, or
    # on a CPU with native bf16 matrix units (AMX / AVX512-BF16: about 1.3x faster per step here)
    bf16: str = "auto"
    # cheap CPU loss (loss.CheapLoss / topk_loss.py): keep the teacher's top-k and/or estimate the
    # normaliser over `loss_vocab` candidate tokens (None: exact full-vocabulary forward KL)
    teacher_topk: int | None = None
    loss_vocab: int | None = None

    def context_window(self, step: int) -> int | None:
        if step >= self.window_steps:
            return None
        return int(self.window_start + (1024 - self.window_start) * step / self.window_steps)

    def validate(self) -> None:
        errs = []
        for k in ("steps", "seqs_per_step", "anchors_per_seq"):
            if getattr(self, k) < 1:
                errs.append(f"{k} {getattr(self, k)} must be >= 1")
        for k in ("warmup_steps", "eval_every", "save_every", "grad_clip", "weight_decay", "gamma",
                  "window_steps", "time_budget_s", "budget_probe_steps"):
            if getattr(self, k) < 0:
                errs.append(f"{k} {getattr(self, k)} must be >= 0")
        if not 0 <= self.stop_at <= self.steps:
            errs.append(f"stop_at {self.stop_at} must be between 0 (off) and steps {self.steps}")
        if self.bf16 not in ("auto", "on", "off"):
            errs.append(f"bf16 {self.bf16!r} must be auto, on or off")
        if self.window_start < 1:
            errs.append(f"window_start {self.window_start} must be >= 1")
        for k in ("teacher_topk", "loss_vocab"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                errs.append(f"{k} {getattr(self, k)} must be >= 1 (or None: exact)")
        if not 0 <= self.min_lr_ratio <= 1:
            errs.append(f"min_lr_ratio {self.min_lr_ratio} must be in [0, 1]")
        if errs:
            raise ValueError("invalid training config: " + "; ".join(errs))


# evaluator(step, head) -> metrics to log (run on rank 0 only)
Evaluator = Callable[[int, DraftHead], dict]


class Trainer:
    def __init__(self, config: TrainConfig, target: FrozenTarget, head: DraftHead,
                 train_seqs: list[TrainSequence], out_dir: str, dist: dist_util.DistInfo | None = None,
                 evaluator: Evaluator | None = None, progress: bool = True, feature_cache=None):
        """feature_cache: a FeatureCache holding every training sequence (no target pass per step)."""
        config.validate()
        self.feature_cache = feature_cache
        self.cfg, self.target, self.head, self.out_dir = config, target, head, out_dir
        self.dist = dist or dist_util.DistInfo()
        self.seqs = shard_for_rank(train_seqs, self.dist.rank, self.dist.world_size)
        self.model = dist_util.wrap(DraftForTraining(head), self.dist)
        self.optimizer = build_optimizer(head, config.lr, config.weight_decay)
        self.scheduler = warmup_cosine(self.optimizer, config.warmup_steps, config.steps, config.min_lr_ratio)
        self.evaluator, self.progress = evaluator, progress
        self.step = 0
        self.companions: list[Trainer] = []
        dev = target.device.type
        self.bf16 = bf16_available(dev) if config.bf16 == "auto" else config.bf16 == "on"
        self._autocast = (lambda: torch.autocast(dev, dtype=torch.bfloat16)) if self.bf16 else contextlib.nullcontext

    # ---- data ------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[list[TrainSequence], torch.Tensor, torch.Tensor]:
        """Step `step`'s sequences (epoch-wise permutation of this rank's shard) and anchors [b, N]."""
        k, n = self.cfg.seqs_per_step, len(self.seqs)
        picked = []
        for i in range(step * k, step * k + k):
            epoch, j = divmod(i, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch))
            picked.append(self.seqs[int(perm[j])])
        g = step_generator(self.cfg.seed, step, self.dist.rank)
        anchors, valid = zip(*(sample_anchors(q, self.cfg.anchors_per_seq, g) for q in picked))
        return picked, torch.stack(anchors), torch.stack(valid)

    # ---- one step --------------------------------------------------------------------------
    def train_step(self) -> StepResult:
        seqs, anchors, valid = self.batch(self.step)
        self.model.train()
        with self._autocast():
            res = block_loss(self.model, self.head.config, self.target, seqs, anchors, valid, self.cfg.gamma,
                             self.cfg.context_window(self.step), cheap=self._cheap_loss())
        res.loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.head.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return res

    def _cheap_loss(self) -> CheapLoss | None:
        c = self.cfg
        if self.feature_cache is None and c.teacher_topk is None and c.loss_vocab is None:
            return None
        # negatives of the candidate vocabulary: a pure function of (seed, step, rank) like the anchors
        g = step_generator(c.seed + 7_777_777, self.step, self.dist.rank)
        return CheapLoss(self.feature_cache, c.teacher_topk, c.loss_vocab, g)

    def add_companion(self, other: "Trainer") -> None:
        """Train `other` in lockstep: same steps, batches and anchors (same seed and data), one
        step of each per loop turn, saved and evaluated together. With a memoising FrozenTarget
        the two share the target pass. Used for the causal vs bidirectional comparison."""
        a, b = self.cfg, other.cfg
        same = ("steps", "seed", "seqs_per_step", "anchors_per_seq", "eval_every", "save_every")
        diff = [k for k in same if getattr(a, k) != getattr(b, k)]
        if diff or other.seqs != self.seqs:
            raise ValueError(f"a lockstep companion must train on the same data and schedule; differs in "
                             f"{diff or ['training sequences']}")
        if other.step != self.step:
            raise ValueError(f"companion is at step {other.step}, this trainer at {self.step}")
        self.companions.append(other)

    def _all(self) -> list["Trainer"]:
        return [self] + self.companions

    def fit_to_budget(self, elapsed_s: float, steps_done: int) -> int:
        """Lower cfg.steps (this trainer and companions) so the run ends within time_budget_s,
        given `steps_done` steps took `elapsed_s`; re-fits the cosine schedule. Returns the total."""
        per_step = elapsed_s / max(1, steps_done)
        left = max(0.0, self.cfg.time_budget_s - elapsed_s)
        total = max(self.step + 1, min(self.cfg.steps, self.step + int(left / per_step)))
        for t in self._all():
            t.cfg.steps = total
            t.scheduler = _refit(t.scheduler, t.optimizer, t.cfg, self.step)
        return total

    # ---- checkpoints -----------------------------------------------------------------------
    def save(self) -> None:
        if self.dist.is_main:
            save_training_state(self.out_dir, self.head, self.optimizer, self.scheduler, self.step,
                                meta={"train_config": asdict(self.cfg)})
        dist_util.barrier(self.dist)

    def resume(self) -> int:
        """Continue from out_dir's trainer state; returns the step it continues at."""
        state = load_training_state(self.out_dir, self.head, self.optimizer, self.scheduler)
        self.step = int(state["step"])
        return self.step

    def _log(self, record: dict) -> None:
        if self.dist.is_main:
            os.makedirs(self.out_dir, exist_ok=True)
            with open(os.path.join(self.out_dir, LOG_NAME), "a") as f:
                f.write(json.dumps(record) + "\n")

    def evaluate(self) -> dict:
        if self.evaluator is None or not self.dist.is_main:
            return {}
        t0 = time.perf_counter()
        metrics = self.evaluator(self.step, self.head)
        metrics["eval_seconds"] = round(time.perf_counter() - t0, 1)
        self._log({"step": self.step, "eval": metrics})
        return metrics

    # ---- loop ------------------------------------------------------------------------------
    def _last_step(self) -> int:
        """The step this run ends after: cfg.steps (which a time budget may lower) or stop_at."""
        return min(self.cfg.steps, self.cfg.stop_at) if self.cfg.stop_at else self.cfg.steps

    def run(self) -> list[float]:
        """Train up to cfg.steps; returns the losses of this call's steps."""
        cfg, losses = self.cfg, []
        if self.step == 0 and cfg.eval_every:
            for t in self._all():
                t._report(t.evaluate())
        t_start, start_step, fitted = time.perf_counter(), self.step, cfg.time_budget_s <= 0
        bar = tqdm(total=self._last_step(), initial=self.step, disable=not (self.progress and self.dist.is_main),
                   dynamic_ncols=True, unit="step")
        acc_ema = loss_ema = None
        while self.step < self._last_step():
            t0 = time.perf_counter()
            res = self.train_step()
            for t in self.companions:
                r = t.train_step()
                t._log({"step": t.step, "loss": round(float(r.loss.detach()), 5),
                        "acc1": round(float(r.correct[0] / r.count[0].clamp_min(1)), 4)})
            dt = time.perf_counter() - t0
            if not fitted and self.step - start_step >= cfg.budget_probe_steps:
                fitted = True
                total = self.fit_to_budget(time.perf_counter() - t_start, self.step - start_step)
                bar.total = self._last_step()
                bar.write(f"[budget] {cfg.time_budget_s:.0f}s at {dt:.2f}s/step -> {total} steps "
                          f"(rerun with --steps {total} to repeat this schedule)")
                self._log({"step": self.step, "budget_steps": total})
            stats = dist_util.sum_over_ranks(torch.stack([res.loss.detach().float().cpu() * 1.0,
                                                          res.correct[0], res.count[0], res.count.sum()]), self.dist)
            loss = float(stats[0]) / self.dist.world_size
            acc1 = float(stats[1] / stats[2].clamp_min(1))
            losses.append(float(res.loss.detach()))
            loss_ema = loss if loss_ema is None else 0.9 * loss_ema + 0.1 * loss
            acc_ema = acc1 if acc_ema is None else 0.9 * acc_ema + 0.1 * acc1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.3f}", acc1=f"{acc_ema:.3f}", tok_s=f"{float(stats[3]) / dt:.0f}",
                            lr=f"{self.scheduler.get_last_lr()[0]:.1e}", s_step=f"{dt:.2f}")
            self._log({"step": self.step, "loss": round(loss, 5), "acc1": round(acc1, 4), "s": round(dt, 3),
                       "slots": int(stats[3])})
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                for t in self._all():
                    t.save()
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                for t in self._all():
                    t._report(t.evaluate(), bar)
        bar.close()
        for t in self._all():
            t.save()
        return losses

    def _report(self, metrics: dict, bar=None) -> None:
        if metrics and self.dist.is_main:
            line = f"[eval {os.path.basename(os.path.normpath(self.out_dir))} step {self.step}] " + " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
            (bar.write if bar is not None else print)(line)


def bf16_available(device_type: str) -> bool:
    if device_type == "cuda":
        return True
    if device_type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def _refit(old, optimizer, cfg: TrainConfig, step: int):
    """A warm-up + cosine scheduler over cfg.steps that continues at `step` (lrs set for it)."""
    for group, base in zip(optimizer.param_groups, old.base_lrs):
        group["lr"] = base
    sched = warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    for _ in range(step):
        sched.step()
    return sched


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, list):
        return "[" + ",".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in v) + "]"
    return str(v)
