"""Probe, not project code: where bf16 reference-decoder outputs first differ from bf16 plain
decoding, the gap between the two tokens' logits under a fresh sequential bf16 forward and
whether both are its top-2 (reference/parity.py's test, reported without a tolerance).
Usage: OMP_NUM_THREADS=2 python docs/bench/cpu-smollm2-reference-stage5/scripts/bf16_divergences.py"""
import torch
from sglang_jetspec.reference.runner import resolve_model, load_head_arg
from sglang_jetspec.reference.target import HFTarget
from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
from sglang_jetspec.reference.prompts import read_prompts, encode_prompts
from sglang_jetspec.reference.ar import generate_ar
from sglang_jetspec.reference.parity import check_parity
torch.set_num_threads(2)
t = HFTarget(resolve_model(None), dtype=torch.bfloat16)
h = load_head_arg(None, t)
decs = {b: ReferenceDecoder(t, h, TreeSettings(budget=b)) for b in (6, 12)}
for s in ("math", "code", "chat"):
    for i, p in enumerate(encode_prompts(t.tokenizer, read_prompts(f"data/prompts/{s}.heldout.jsonl")[:3])):
        want = generate_ar(t, p, 128).output_ids
        for b, d in decs.items():
            rep = check_parity(t.model, p, want, d.generate(p, 128).output_ids, tie_tol=float("inf"))
            print(f"{s}[{i}] @{b}: " + ("identical" if rep.identical else rep.detail), flush=True)
