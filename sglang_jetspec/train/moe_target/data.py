"""Training batches for the distillation: padded sequences, and which rows learn from what.

A sequence is prompt + SmolLM2's own greedy answer. Row t (the output at position t) predicts
token t+1; the rows that matter are the answer rows t in [prompt_len - 1, T - 2]. Where the
feature cache holds SmolLM2's top-k log-probs for a row (rows >= prompt_len of the cached
sequences) the row is "soft" (KL to that top-k); every other answer row is "hard" (cross-entropy
on the data token, which is the teacher's greedy choice). Prompt rows carry no loss.

Batches are a pure function of (seed, step): a resumed run sees exactly the batches an
uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sglang_jetspec.train.dataset import TrainSequence


@dataclass
class DistillBatch:
    ids: torch.Tensor          # [B, T] long, right-padded with pad_id
    attention: torch.Tensor    # [B, T] long, 1 on real tokens
    soft_rows: torch.Tensor    # [S, 2] long (b, t)
    soft_ids: torch.Tensor     # [S, k] long, teacher top-k ids of those rows
    soft_lp: torch.Tensor      # [S, k] fp32, teacher log-probs of those ids
    hard_rows: torch.Tensor    # [H, 2] long (b, t)
    hard_targets: torch.Tensor  # [H] long, the next token

    @property
    def num_rows(self) -> int:
        return len(self.soft_rows) + len(self.hard_rows)


def epoch_order(lengths: list[int], seqs_per_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of one epoch: a seeded shuffle, then windows of 8 batches sorted by length so a
    batch pads little, then the batches shuffled again. Every index appears exactly once."""
    if seqs_per_batch < 1:
        raise ValueError(f"seqs_per_batch {seqs_per_batch} must be >= 1")
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    window = seqs_per_batch * 8
    batches = []
    for w in range(0, len(perm), window):
        part = sorted(perm[w:w + window], key=lambda i: lengths[i])
        batches += [part[i:i + seqs_per_batch] for i in range(0, len(part), seqs_per_batch)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def batch_for_step(lengths: list[int], seqs_per_batch: int, seed: int, step: int) -> list[int]:
    """Sequence indices of training step `step` (epochs follow each other)."""
    per_epoch = -(-len(lengths) // seqs_per_batch)
    return epoch_order(lengths, seqs_per_batch, seed, step // per_epoch)[step % per_epoch]


def make_batch(seqs: list[TrainSequence], teachers: list, pad_id: int) -> DistillBatch:
    """teachers[i]: a CachedTeacher for seqs[i] or None (then all its answer rows are hard)."""
    width = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros(len(seqs), width, dtype=torch.long)
    soft_rows, soft_ids, soft_lp, hard_rows, hard_targets = [], [], [], [], []
    for b, (s, teacher) in enumerate(zip(seqs, teachers)):
        n = len(s.ids)
        ids[b, :n] = s.ids
        attention[b, :n] = 1
        rows = torch.arange(max(s.prompt_len - 1, 0), n - 1)  # [R] answer rows
        soft = torch.zeros(len(rows), dtype=torch.bool)
        if teacher is not None:
            lo, hi = teacher.first_row, teacher.first_row + len(teacher.ids)
            soft = (rows >= lo) & (rows < hi)
            t_ids, t_lp = teacher.rows(rows[soft])
            soft_ids.append(t_ids)
            soft_lp.append(t_lp)
        bcol = torch.full_like(rows, b)
        soft_rows.append(torch.stack([bcol[soft], rows[soft]], 1))
        hard_rows.append(torch.stack([bcol[~soft], rows[~soft]], 1))
        hard_targets.append(s.ids[rows[~soft] + 1])
    k = soft_ids[0].shape[1] if soft_ids else 1
    return DistillBatch(
        ids, attention, torch.cat(soft_rows),
        torch.cat(soft_ids) if soft_ids else torch.zeros(0, k, dtype=torch.long),
        torch.cat(soft_lp) if soft_lp else torch.zeros(0, k),
        torch.cat(hard_rows), torch.cat(hard_targets))
