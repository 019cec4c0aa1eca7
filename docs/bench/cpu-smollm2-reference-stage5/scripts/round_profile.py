"""Probe: cProfile of one budget-6 reference generation of a math held-out prompt (two threads),
after two warm-up prompts against plain decoding. Usage (the argument is the budget):
OMP_NUM_THREADS=2 python docs/bench/cpu-smollm2-reference-stage5/scripts/round_profile.py 6"""
import time, torch, cProfile, pstats, sys
from sglang_jetspec.reference.runner import resolve_model, load_head_arg
from sglang_jetspec.reference.target import HFTarget
from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
from sglang_jetspec.reference.prompts import read_prompts, encode_prompts
from sglang_jetspec.reference.ar import generate_ar
torch.set_num_threads(2)
t = HFTarget(resolve_model(None))
h = load_head_arg(None, t)
dec = ReferenceDecoder(t, h, TreeSettings(budget=int(sys.argv[1]) if len(sys.argv) > 1 else 6))
ids = encode_prompts(t.tokenizer, read_prompts("data/prompts/math.heldout.jsonl")[:3])
dec.generate(ids[0], 32)
for p in ids[1:]:
    r = generate_ar(t, p, 128); print("ar", len(r.output_ids) / r.seconds)
    r = dec.generate(p, 128); print("ref", len(r.output_ids) / r.seconds, r.rounds, sum(r.accepted) / r.rounds)
pr = cProfile.Profile(); pr.enable()
r = dec.generate(ids[2], 128)
pr.disable(); print("ref", r.seconds, r.rounds)
pstats.Stats(pr).sort_stats("cumulative").print_stats(45)
