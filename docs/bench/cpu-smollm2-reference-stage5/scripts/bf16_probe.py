"""Probe, not project code: plain decoding and the reference decoder both in bf16 (AMX) on three
held-out prompts per set; prints tok/s, accepted length and whether each output equals bf16 plain
decoding. Usage: OMP_NUM_THREADS=2 python docs/bench/cpu-smollm2-reference-stage5/scripts/bf16_probe.py bfloat16"""
import time, torch, sys
from sglang_jetspec.reference.runner import resolve_model, load_head_arg
from sglang_jetspec.reference.target import HFTarget
from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
from sglang_jetspec.reference.prompts import read_prompts, encode_prompts
from sglang_jetspec.reference.ar import generate_ar
torch.set_num_threads(2)
dt = getattr(torch, sys.argv[1])
t = HFTarget(resolve_model(None), dtype=dt)
h = load_head_arg(None, t)
decs = {b: ReferenceDecoder(t, h, TreeSettings(budget=b)) for b in (6, 8, 12, 16)}
for s in ("math", "code", "chat"):
    ids = encode_prompts(t.tokenizer, read_prompts(f"data/prompts/{s}.heldout.jsonl")[:3])
    generate_ar(t, ids[0], 8)
    for p in ids:
        a = generate_ar(t, p, 128)
        line = f"{s} ar {len(a.output_ids)/a.seconds:.1f}"
        for b, d in decs.items():
            r = d.generate(p, 128)
            line += f" | @{b} {len(r.output_ids)/r.seconds:.1f} acc {sum(r.accepted)/r.rounds:.2f} same {r.output_ids == a.output_ids}"
        print(line, flush=True)
