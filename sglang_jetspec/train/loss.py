"""The training objective of paper section 2.3 on one step's sequences.

Block j opens at anchor a_j: inputs [token a_j, MASK x (S-1)] at positions a_j .. a_j+S-1. Slot i
(1..S-1) predicts token a_j + i, so its teacher is the target's row at position a_j + i - 1
(p(. | prefix up to a_j + i - 1)). Loss: forward KL(teacher || head) per slot, weighted by
exp(-(i-1)/gamma) (gamma 0: uniform), averaged over the slots whose target a_j + i exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sglang_jetspec.core.head import DraftHead, build_block_attn_mask
from sglang_jetspec.train.teacher import FrozenTarget
from sglang_jetspec.train.topk_loss import TopKTeacher, topk_kl_candidates, topk_kl_full


@dataclass
class BlockLayout:
    """Where every block slot sits and what it is graded on, for b sequences x N anchors."""
    anchors: torch.Tensor      # [b, N]
    target_pos: torch.Tensor   # [b, N, S-1]  position predicted by slot i = a + i
    teacher_pos: torch.Tensor  # [b, N, S-1]  teacher row used for slot i = a + i - 1
    valid: torch.Tensor        # [b, N, S-1]  anchor valid and a + i < sequence length


def block_layout(anchors: torch.Tensor, anchor_valid: torch.Tensor, seq_lens: torch.Tensor,
                 block_size: int) -> BlockLayout:
    """anchors/anchor_valid [b, N], seq_lens [b] -> the graded slots of every block."""
    depth = torch.arange(1, block_size, device=anchors.device)  # [S-1]
    target_pos = anchors[..., None] + depth  # [b, N, S-1]
    valid = anchor_valid[..., None] & (target_pos < seq_lens[:, None, None])
    return BlockLayout(anchors, target_pos, target_pos - 1, valid)


def depth_weights(num_depths: int, gamma: float) -> torch.Tensor:
    """w_i = exp(-(i-1)/gamma) for i = 1..num_depths; gamma 0 = uniform."""
    if gamma < 0:
        raise ValueError(f"gamma {gamma} must be >= 0 (0 = uniform weights)")
    i = torch.arange(num_depths, dtype=torch.float32)
    return torch.ones(num_depths) if gamma == 0 else torch.exp(-i / gamma)


def forward_kl(head_logits: torch.Tensor, teacher_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || head) per row: [M, V] x [M, V] -> [M] (fp32). The plain reference of
    `TeacherSummary.kl`."""
    lq = F.log_softmax(head_logits.float(), dim=-1)
    return F.kl_div(lq, teacher_logprobs, log_target=True, reduction="none").sum(-1)


@dataclass
class TeacherSummary:
    """What the KL needs of each teacher row, so no [M, V] teacher copy is ever gathered.

    With head logits z = W h + b (the target's lm_head):
        KL(p || softmax z) = sum p log p - (p @ W) . h - p . b + logsumexp(z).
    Per-row elementwise work over the vocabulary was 2/3 of a CPU step before this.
    """
    neg_entropy: torch.Tensor     # [R]     sum_v p log p
    expected_embed: torch.Tensor  # [R, d]  p @ W
    bias_term: torch.Tensor       # [R]     p . b (0 without an lm_head bias)

    @classmethod
    def from_logprobs(cls, logprobs: torch.Tensor, lm_head: nn.Linear) -> "TeacherSummary":
        p = logprobs.exp()  # [R, V]
        neg_h = (p * logprobs).sum(-1)
        bias = torch.zeros_like(neg_h) if lm_head.bias is None else p @ lm_head.bias.float()
        return cls(neg_h, p @ lm_head.weight.float(), bias)

    def kl(self, hidden: torch.Tensor, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """hidden [M, d] with logits [M, V] = lm_head(hidden), teacher rows [M] -> KL [M] fp32."""
        cross = (hidden.float() * self.expected_embed[rows]).sum(-1) + self.bias_term[rows]
        return self.neg_entropy[rows] - cross + torch.logsumexp(logits.float(), dim=-1)


class DraftForTraining(nn.Module):
    """The head with project_context folded into its forward: the one module DDP wraps, so every
    trainable parameter is used inside a single forward per step."""

    def __init__(self, head: DraftHead):
        super().__init__()
        self.head = head

    def forward(self, feats, ctx_positions, block_embeds, block_positions, attn_mask):
        """feats [b, T, K*d], block_embeds [b, N*S, d] -> draft hidden states [b, N*S, d]."""
        ctx = self.head.project_context(feats.to(block_embeds.dtype))
        return self.head(block_embeds, block_positions, ctx, ctx_positions, attn_mask)


@dataclass
class StepResult:
    loss: torch.Tensor            # scalar, differentiable
    kl_sum: torch.Tensor          # [S-1] summed KL per depth (detached)
    correct: torch.Tensor         # [S-1] head argmax == data token, per depth
    count: torch.Tensor           # [S-1] graded slots per depth
    tokens: int                   # target tokens run through the teacher pass


@dataclass
class CheapLoss:
    """The CPU approximations of topk_loss.py (None fields: the exact path).

    cache: a FeatureCache holding every step sequence (features + top-k teacher, no target pass);
    teacher_topk: keep the teacher's top-k (default: the cache's k, else 32 when loss_vocab is set);
    loss_vocab: estimate the head's normaliser over this many candidate tokens instead of all V;
    generator: draws the candidates' negatives (seeded per step for exact resumes)."""
    cache: object | None = None
    teacher_topk: int | None = None
    loss_vocab: int | None = None
    generator: torch.Generator | None = None

    @property
    def uses_topk(self) -> bool:
        return self.cache is not None or self.teacher_topk is not None or self.loss_vocab is not None


def block_loss(model: nn.Module, head_config, target: FrozenTarget, seqs, anchors: torch.Tensor,
               anchor_valid: torch.Tensor, gamma: float = 0.0, context_window: int | None = None,
               batch_teacher: bool | None = None, cheap: CheapLoss | None = None) -> StepResult:
    """One step's objective. model: DraftForTraining (maybe DDP-wrapped); seqs: TrainSequence list;
    anchors/anchor_valid [b, N]. context_window: blocks see only the last W context positions
    (a curriculum aid, see TrainConfig; None = the whole prefix, as in decoding).
    batch_teacher: one padded target forward for all sequences (default: on CUDA) instead of
    one per sequence (on a CPU the padding costs more than it saves).
    cheap: the top-k / candidate-vocabulary / feature-cache approximations (default: exact)."""
    cheap = cheap or CheapLoss()
    cfg, dev = head_config, target.device
    s, (b, n) = cfg.block_size, anchors.shape
    if cfg.mask_token_id is None:
        raise ValueError("head config has no mask_token_id; training needs one for the MASK slots")
    lens = torch.tensor([len(q.ids) for q in seqs])
    lay = block_layout(anchors, anchor_valid, lens, s)
    t_max = int(lens.max())

    feats = torch.zeros(b, t_max, cfg.num_target_features, device=dev)
    wants = [lay.teacher_pos[j][lay.valid[j]] for j in range(b)]  # [m_j] row-major over (anchor, depth)
    uniq = [torch.unique(w) for w in wants]  # sorted teacher rows shared by overlapping blocks
    if batch_teacher is None:
        batch_teacher = dev.type == "cuda"
    if cheap.cache is not None:
        passes = [_cached_pass(cheap.cache, q.ids, r, cheap.teacher_topk) for q, r in zip(seqs, uniq)]
    elif batch_teacher:
        passes = target.features_and_teacher_batch([q.ids for q in seqs], cfg.target_layer_ids, uniq)
    else:
        passes = [target.features_and_teacher(q.ids, cfg.target_layer_ids, r) for q, r in zip(seqs, uniq)]
    teachers, rows_of = [], []
    offset = 0
    for j, q in enumerate(seqs):
        f, t = passes[j]
        feats[j, : len(q.ids)] = f
        teachers.append(t)
        rows_of.append(offset + torch.searchsorted(uniq[j], wants[j]))
        offset += len(uniq[j])
    row_idx = torch.cat(rows_of).to(dev)  # [M] -> teacher row
    if cheap.cache is not None:
        teacher = TopKTeacher(torch.cat([t.ids for t in teachers]).to(dev), torch.cat([t.logprobs for t in teachers]).to(dev))
    elif cheap.uses_topk:
        teacher = TopKTeacher.from_logprobs(torch.cat(teachers), cheap.teacher_topk or 32)
    else:
        teacher = TeacherSummary.from_logprobs(torch.cat(teachers), target.lm_head)  # R rows

    ids = torch.nn.utils.rnn.pad_sequence([q.ids for q in seqs], batch_first=True)  # [b, T]
    block_ids = torch.full((b, n, s), cfg.mask_token_id, dtype=torch.long)
    block_ids[:, :, 0] = torch.gather(ids, 1, anchors)
    positions = (anchors[..., None] + torch.arange(s)).view(b, n * s)
    mask = build_block_attn_mask(t_max, anchors, s, causal=cfg.causal_head)  # [b, N*S, T+N*S]
    if context_window is not None:
        start = (anchors - context_window).repeat_interleave(s, dim=1)  # [b, N*S]
        mask[:, :, :t_max] &= torch.arange(t_max) >= start[..., None]
    ctx_pos = torch.arange(t_max).expand(b, t_max)
    hidden = model(feats, ctx_pos.to(dev), target.embed(block_ids.view(b, n * s).to(dev)),
                   positions.to(dev), mask.to(dev))  # [b, N*S, d]

    graded = hidden.view(b, n, s, -1)[:, :, 1:][lay.valid.to(dev)]  # [M, d]
    cand_ids = None
    if not cheap.uses_topk:
        logits = target.logits(graded)  # [M, V]
        kl = teacher.kl(graded, logits, row_idx)  # [M]
    elif cheap.loss_vocab is None:
        kl, logits = topk_kl_full(graded, target.lm_head, teacher.ids[row_idx], teacher.logprobs[row_idx])
    else:
        kl, logits, cand = topk_kl_candidates(graded, target.lm_head, teacher.ids[row_idx],
                                              teacher.logprobs[row_idx], cheap.loss_vocab, cheap.generator)
        cand_ids = cand.ids  # [N]: logits columns -> token ids
    depth = (torch.nonzero(lay.valid)[:, 2]).to(dev)  # [M] 0-based depth (slot i - 1)
    w = depth_weights(s - 1, gamma).to(dev)[depth]
    loss = (w * kl).sum() / w.sum().clamp_min(1e-12)

    with torch.no_grad():
        labels = torch.gather(ids, 1, lay.target_pos.clamp_max(t_max - 1).view(b, -1)).view_as(lay.target_pos)
        pred = logits.argmax(-1).cpu()
        if cand_ids is not None:  # argmax among the candidates (the data token is always one)
            pred = cand_ids[pred]
        hit = (pred == labels[lay.valid]).float()
        count = torch.bincount(depth.cpu(), minlength=s - 1).float()
        correct = torch.bincount(depth.cpu(), weights=hit, minlength=s - 1)
        kl_sum = torch.bincount(depth.cpu(), weights=kl.detach().float().cpu(), minlength=s - 1)
    return StepResult(loss, kl_sum, correct, count, int(lens.sum()))


def _cached_pass(cache, ids: torch.Tensor, rows: torch.Tensor, k: int | None):
    """(features [T, K*d], TopKTeacher of `rows`) from a FeatureCache, top-k cut to k."""
    feats, teacher = cache.get(ids)
    top_ids, top_lp = teacher.rows(rows)
    if k is not None:
        if k > top_ids.shape[1]:
            raise ValueError(f"teacher top-k {k} exceeds the cache's k {top_ids.shape[1]}")
        top_ids, top_lp = top_ids[:, :k], top_lp[:, :k]
    return feats, TopKTeacher(top_ids, top_lp)
