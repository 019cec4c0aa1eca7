"""Plain autoregressive decoding with the same target: the baseline and the greedy oracle."""

from __future__ import annotations

import time

import torch

from sglang_jetspec.core.sampling import target_distribution
from sglang_jetspec.reference.results import GenerationResult, truncate_at_stop
from sglang_jetspec.reference.target import HFTarget


@torch.no_grad()
def generate_ar(target: HFTarget, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                top_k: int = -1, top_p: float = 1.0, seed: int = 0) -> GenerationResult:
    """Greedy decoding goes through ``model.generate`` (Hugging Face's own loop is the oracle);
    sampling uses a token-by-token loop drawing from the same target distribution as JetSpec."""
    t0 = time.perf_counter()
    eos = target.eos_token_ids()
    ids = torch.tensor([prompt_ids], device=target.device)
    if temperature == 0.0:
        out = target.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=sorted(eos) or None, pad_token_id=min(eos, default=0),
            temperature=None, top_p=None, top_k=None,
        )
        new = out[0, len(prompt_ids):].tolist()
    else:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        cache = target.new_cache()
        step = target.forward(ids[0], cache, 0)
        new = []
        while len(new) < max_new_tokens:
            probs = target_distribution(step.logits[-1:], temperature, top_k, top_p)[0]
            tok = int(torch.multinomial(probs.cpu(), 1, generator=gen))
            new.append(tok)
            if tok in eos:
                break
            step = target.forward(torch.tensor([tok]), cache, len(prompt_ids) + len(new) - 1)
    new, stopped = truncate_at_stop(new, max_new_tokens, eos)
    return GenerationResult(
        output_ids=new, rounds=max(len(new) - 1, 0), accepted=[1] * max(len(new) - 1, 0),
        seconds=time.perf_counter() - t0, finish_reason="stop" if stopped else "length",
    )
