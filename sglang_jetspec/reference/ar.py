"""Plain autoregressive decoding with the same target: the baseline and the greedy oracle.

Two loops, the same tokens:
- ``loop="step"`` (default): one ``HFTarget.forward`` per token, the lm_head on the new row only.
  The same kernels and the same per-forward path as the reference decoder's verify, so it is the
  plain decoding a wall-clock comparison must beat.
- ``loop="hf"``: Hugging Face's own ``model.generate`` (greedy only), an independent oracle.
  It is slower per token (about 1.2x on SmolLM2-135M on CPU: its logits processors, stopping
  criteria and mask bookkeeping run every step), so it is not the speed baseline.
"""

from __future__ import annotations

import time

import torch

from sglang_jetspec.core.sampling import target_distribution
from sglang_jetspec.reference.results import GenerationResult, truncate_at_stop
from sglang_jetspec.reference.target import HFTarget

LOOPS = ("step", "hf")


@torch.no_grad()
def generate_ar(target: HFTarget, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                top_k: int = -1, top_p: float = 1.0, seed: int = 0, loop: str = "step") -> GenerationResult:
    """Greedy (temperature 0) or sampled plain decoding; sampling draws from the same target
    distribution as JetSpec (core/sampling.py)."""
    if loop not in LOOPS:
        raise ValueError(f"loop {loop!r}: expected one of {LOOPS}")
    if loop == "hf" and temperature != 0.0:
        raise ValueError(f"loop 'hf' is greedy only (temperature {temperature} > 0); use loop='step'")
    t0 = time.perf_counter()
    eos = target.eos_token_ids()
    if loop == "hf":
        ids = torch.tensor([prompt_ids], device=target.device)
        out = target.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=sorted(eos) or None, pad_token_id=min(eos, default=0),
            temperature=None, top_p=None, top_k=None,
        )
        new = out[0, len(prompt_ids):].tolist()
    else:
        gen = torch.Generator(device="cpu").manual_seed(seed)

        def pick(logits_row: torch.Tensor) -> int:
            if temperature == 0.0:
                return int(logits_row.argmax())
            probs = target_distribution(logits_row[None], temperature, top_k, top_p)[0]
            return int(torch.multinomial(probs.cpu(), 1, generator=gen))

        cache = target.new_cache()
        step = target.forward(torch.tensor(prompt_ids), cache, 0, logits=False)
        new = []
        while len(new) < max_new_tokens:
            tok = pick(target.lm_head(step.hidden[-1:])[0])
            new.append(tok)
            if tok in eos:
                break
            if len(new) < max_new_tokens:
                step = target.forward(torch.tensor([tok]), cache, len(prompt_ids) + len(new) - 1, logits=False)
    new, stopped = truncate_at_stop(new, max_new_tokens, eos)
    return GenerationResult(
        output_ids=new, rounds=max(len(new) - 1, 0), accepted=[1] * max(len(new) - 1, 0),
        seconds=time.perf_counter() - t0, finish_reason="stop" if stopped else "length",
    )
