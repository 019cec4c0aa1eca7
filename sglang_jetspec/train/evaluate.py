"""How good a head is: per-depth accuracy on held-out answers (teacher-forced, cheap) and mean
accepted length through the reference decoder (the number that matters, slower)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sglang_jetspec.core.head import DraftHead
from sglang_jetspec.train.dataset import sample_anchors
from sglang_jetspec.train.loss import DraftForTraining, block_loss
from sglang_jetspec.train.teacher import FrozenTarget


@dataclass
class DepthMetrics:
    accuracy: list[float]  # per depth 1..S-1: head argmax == the answer's token
    kl: list[float]        # per depth: mean KL(teacher || head)
    slots: int             # graded slots

    @property
    def mean_kl(self) -> float:
        return sum(self.kl) / len(self.kl)


@torch.no_grad()
def depth_metrics(target: FrozenTarget, head: DraftHead, seqs, anchors_per_seq: int = 32,
                  seed: int = 1234) -> DepthMetrics:
    """Teacher-forced per-depth accuracy/KL on `seqs` at fixed random anchors (same every call)."""
    if not seqs:
        raise ValueError("no validation sequences to evaluate on")
    was_training = head.training
    head.eval()
    model = DraftForTraining(head)
    g = torch.Generator().manual_seed(seed)
    s1 = head.config.block_size - 1
    correct, count, kl = torch.zeros(s1), torch.zeros(s1), torch.zeros(s1)
    for seq in seqs:
        a, v = sample_anchors(seq, anchors_per_seq, g)
        r = block_loss(model, head.config, target, [seq], a[None], v[None])
        correct += r.correct
        count += r.count
        kl += r.kl_sum
    head.train(was_training)
    c = count.clamp_min(1)
    return DepthMetrics((correct / c).tolist(), (kl / c).tolist(), int(count.sum()))


@dataclass
class AcceptanceReport:
    budget: int
    mean_accepted: float  # tokens committed per target forward (bonus included)
    rounds: int
    tokens: int


@torch.no_grad()
def mean_accepted_length(hf_target, head: DraftHead, prompt_ids: list[list[int]], budget: int,
                         max_new_tokens: int = 128, width: int = 7, temperature: float = 0.0,
                         seed: int = 0, sampling_rule: str = "rrs") -> AcceptanceReport:
    """Decoding of the prompts through the reference decoder at one node budget: greedy, or with
    temperature > 0 the decoder's lossless tree sampling by `sampling_rule` (TreeSettings;
    prompt i seeded with seed + i)."""
    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings

    was_training = head.training
    dec = ReferenceDecoder(hf_target, head, TreeSettings(budget=budget, width=width, sampling_rule=sampling_rule))
    rounds = tokens = 0
    for i, ids in enumerate(prompt_ids):
        res = dec.generate(ids, max_new_tokens, temperature=temperature, seed=seed + i)
        rounds += res.rounds
        tokens += sum(res.accepted)
    head.train(was_training)
    return AcceptanceReport(budget, tokens / max(rounds, 1), rounds, tokens)
