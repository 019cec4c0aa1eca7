"""How close the MoE target is to SmolLM2 on answers it was not trained on.

Teacher-forced on held-out (prompt, SmolLM2 greedy answer) sequences: at every answer row,
does the student's argmax equal the next data token (SmolLM2's own greedy choice)? With the
teacher model given, also its exact argmax on the same rows and the full-vocabulary
KL(teacher || student), which needs no cache.
"""

from __future__ import annotations

import torch

from sglang_jetspec.train.dataset import TrainSequence


def answer_rows(seq: TrainSequence) -> torch.Tensor:
    """Rows t whose output predicts an answer token t+1: [prompt_len - 1, T - 2]."""
    return torch.arange(max(seq.prompt_len - 1, 0), len(seq.ids) - 1)


@torch.no_grad()
def agreement(student, seqs: list[TrainSequence], teacher=None) -> dict:
    """student/teacher: causal LMs (fp32, eval mode). Returns rates over all answer rows."""
    rows_total = agree_data = agree_teacher = teacher_is_data = 0
    kl_sum = 0.0
    for s in seqs:
        rows = answer_rows(s)
        logits = student(input_ids=s.ids[None], use_cache=False).logits[0, rows].float()  # [R, V]
        pred = logits.argmax(-1)
        data = s.ids[rows + 1]
        rows_total += len(rows)
        agree_data += int((pred == data).sum())
        if teacher is not None:
            t_logits = teacher(input_ids=s.ids[None], use_cache=False).logits[0, rows].float()
            t_pred = t_logits.argmax(-1)
            agree_teacher += int((pred == t_pred).sum())
            teacher_is_data += int((t_pred == data).sum())
            t_lp, s_lp = t_logits.log_softmax(-1), logits.log_softmax(-1)
            kl_sum += float((t_lp.exp() * (t_lp - s_lp)).sum())
    if rows_total == 0:
        raise ValueError("no answer rows to evaluate")
    out = {"sequences": len(seqs), "rows": rows_total, "agree_with_data": round(agree_data / rows_total, 4)}
    if teacher is not None:
        out.update(agree_with_teacher=round(agree_teacher / rows_total, 4),
                   teacher_argmax_is_data=round(teacher_is_data / rows_total, 4),
                   kl_teacher_student=round(kl_sum / rows_total, 4))
    return out
