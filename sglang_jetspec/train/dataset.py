"""Regenerated answers as training sequences, a deterministic validation split, rank shards,
and the random anchors that open draft blocks inside an answer.

A sequence is prompt_ids + output_ids. Block anchors live in the answer only: in decoding the
first anchor is the first generated token (the prefill produced it), so an anchor at position a
satisfies prompt_len <= a <= len - 2 (slot 1 must have a token a + 1 to predict).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from sglang_jetspec.train.regen_store import read_records, shard_paths


@dataclass(frozen=True)
class TrainSequence:
    ids: torch.Tensor  # [T] long: prompt then answer
    prompt_len: int
    prompt: str = ""

    @property
    def num_anchor_positions(self) -> int:
        """Anchors a in [prompt_len, T - 2]."""
        return max(0, len(self.ids) - 1 - self.prompt_len)


DEFAULT_MAX_LEN = 1024  # tokens a training sequence is cut to (launch.train_head --max-len)


def load_sequences(dirs: list[str | Path], max_len: int | None = None) -> list[TrainSequence]:
    """Every complete record of the regenerated shard folders, in order.

    Answers shorter than 2 tokens hold no anchor and are dropped; with max_len, sequences are
    cut to max_len tokens (those left without an anchor position are dropped too).
    """
    seqs = []
    for d in dirs:
        if not shard_paths(d):
            raise FileNotFoundError(f"data folder {d!r} holds no shard_*.jsonl files")
        for rec in read_records(d):
            ids = list(rec["prompt_ids"]) + list(rec["output_ids"])
            if max_len is not None:
                ids = ids[:max_len]
            seq = TrainSequence(torch.tensor(ids, dtype=torch.long), len(rec["prompt_ids"]), rec["prompt"])
            if seq.num_anchor_positions >= 1:
                seqs.append(seq)
    if not seqs:
        raise ValueError(f"no usable sequences (answer >= 2 tokens) in {[str(d) for d in dirs]}")
    return seqs


def is_validation(prompt: str, val_percent: float) -> bool:
    """Stable membership by prompt hash: the same prompt stays on one side as the data grows."""
    h = int.from_bytes(hashlib.sha1(prompt.encode("utf-8")).digest()[:4], "big") % 10_000
    return h < val_percent * 100


def split_validation(seqs: list[TrainSequence], val_percent: float,
                     max_val: int | None = None) -> tuple[list[TrainSequence], list[TrainSequence]]:
    """(train, val) by prompt hash; val capped at max_val sequences (the rest is not trained on)."""
    if not 0 <= val_percent < 100:
        raise ValueError(f"val_percent {val_percent} must be in [0, 100)")
    train = [s for s in seqs if not is_validation(s.prompt, val_percent)]
    val = [s for s in seqs if is_validation(s.prompt, val_percent)]
    if not train:
        raise ValueError(f"validation split {val_percent}% left no training sequences of {len(seqs)}")
    return train, val[:max_val]


def shard_for_rank(seqs: list, rank: int, world_size: int) -> list:
    """Rank r trains on every world_size-th sequence starting at r (disjoint, near-equal shards)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must be in [0, world_size {world_size})")
    part = seqs[rank::world_size]
    if not part:
        raise ValueError(f"rank {rank} of {world_size} got no sequences (only {len(seqs)} in total)")
    return part


def sample_anchors(seq: TrainSequence, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n anchor positions (sorted) and their validity, both [n].

    Distinct positions when the answer has at least n of them; otherwise every position once,
    padded with copies of the first that are marked invalid (they carry no loss).
    """
    if n < 1:
        raise ValueError(f"anchors per sequence {n} must be >= 1")
    m = seq.num_anchor_positions
    if m < 1:
        raise ValueError(f"sequence of length {len(seq.ids)} with prompt {seq.prompt_len} has no anchor position")
    pick = torch.randperm(m, generator=generator)[:n].sort().values + seq.prompt_len  # [min(n, m)]
    valid = torch.ones(n, dtype=torch.bool)
    if len(pick) < n:
        valid[len(pick):] = False
        pick = torch.cat([pick, pick[:1].expand(n - len(pick))])
    return pick, valid


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The RNG of one training step: a pure function of (seed, step, rank), so a resumed run
    draws exactly the batches and anchors an uninterrupted one would have drawn."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank)
