"""Greedy decoding with SGLang's penalties applied in their exact sequential meaning, on
transformers: the reference for JETSPEC requests with penalties.

At output position t (0-based; token 0 comes from the prefill) the target's logits get, from the
output tokens 0..t-1: minus frequency_penalty x count and minus presence_penalty if present
(additive, SGLang's frequency/presence penalizers), then the repetition penalty's scaling of every
token present (negative logits x r, others / r), and the stop tokens masked while t <
min_new_tokens. SGLang's plain server without overlap scheduling decodes exactly this; with
overlap scheduling (its default) the penalty state lags one token behind (the prompt's last
token stands in for the first output token), so its output differs (docs/sglang-integration.md).
"""

from dataclasses import dataclass

import torch


@dataclass
class Penalties:
    frequency: float = 0.0
    presence: float = 0.0
    repetition: float = 1.0
    min_new_tokens: int = 0


def penalised(logits: torch.Tensor, out: list[int], pen: Penalties, stop_ids) -> torch.Tensor:
    """[V] logits of the next token after the output tokens `out` (a copy)."""
    x = logits.double().clone()
    if out:
        counts = torch.bincount(torch.tensor(out), minlength=x.shape[0])[: x.shape[0]].double()
        present = counts > 0
        x -= pen.frequency * counts + pen.presence * present.double()
        if pen.repetition != 1.0:
            x = torch.where(present, torch.where(x < 0, x * pen.repetition, x / pen.repetition), x)
    if len(out) < pen.min_new_tokens:
        x[list(stop_ids)] = float("-inf")
    return x


@torch.no_grad()
def greedy_with_penalties(model, prompt: list[int], max_new_tokens: int, pen: Penalties, stop_ids):
    """(output tokens, per position (top-1 id, top-2 id, their penalised logit gap))."""
    out, past, step, tops = [], None, torch.tensor([prompt]), []
    while len(out) < max_new_tokens:
        res = model(input_ids=step, past_key_values=past, use_cache=True)
        past = res.past_key_values
        x = penalised(res.logits[0, -1], out, pen, stop_ids)
        val, idx = torch.topk(x, 2)
        tops.append((int(idx[0]), int(idx[1]), float(val[0] - val[1])))
        tok = int(idx[0])
        out.append(tok)
        if tok in stop_ids:
            break
        step = torch.tensor([[tok]])
    return out, tops


def near_tie_or_equal(want: list[int], got: list[int], tops, tie_tol: float) -> str | None:
    """None if equal; a report if they part at a near-tie of the reference's top two; else raises."""
    j = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), None)
    if j is None:
        assert len(want) == len(got), f"lengths differ ({len(want)} vs {len(got)}) with an identical common prefix"
        return None
    first, second, gap = tops[j]
    assert got[j] == second and gap <= tie_tol, (
        f"first difference at token {j}: {want[j]} vs {got[j]}, reference top-2 {first}/{second} gap {gap:.2e}")
    return f"near-tie at token {j} (gap {gap:.1e})"
