"""Plain decoding (the step loop) with one-row products as they are vs padded to P rows (probe; it patches row_bucket, so it only means something at code before 06575d8, where one row ran as it was).

    OMP_NUM_THREADS=2 python docs/bench/cpu-smollm2-reference-steploop/one_row_pad_probe.py 2 5     # threads, P
First 3 chat held-out prompts, 128 new tokens, the two settings alternating per prompt."""
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
P = int(sys.argv[2])
import sglang_jetspec.core.packed_linear as pl
from sglang_jetspec.reference.prompts import encode_prompts, read_prompts
from sglang_jetspec.reference.runner import resolve_model
from sglang_jetspec.reference.target import HFTarget
from sglang_jetspec.reference.ar import generate_ar
orig = pl.row_bucket
def padded(m):
    return P if m == 1 else orig(m)
tgt = HFTarget(resolve_model(None))
prompts = encode_prompts(tgt.tokenizer, read_prompts("data/prompts/chat.heldout.jsonl")[:3])
for p in prompts[:1]:
    generate_ar(tgt, p, 16); pl.row_bucket = padded; generate_ar(tgt, p, 16); pl.row_bucket = orig
tot = {"as is": [0.0, 0], f"pad {P}": [0.0, 0]}
same = True
for rep in range(2):
    for p in prompts:
        outs = {}
        for key in (("as is", f"pad {P}") if rep == 0 else (f"pad {P}", "as is")):
            pl.row_bucket = padded if key != "as is" else orig
            t = time.perf_counter(); r = generate_ar(tgt, p, 128); dt = time.perf_counter() - t
            pl.row_bucket = orig
            tot[key][0] += dt; tot[key][1] += len(r.output_ids); outs[key] = r.output_ids
        same &= outs["as is"] == outs[f"pad {P}"]
for k, (s, n) in tot.items():
    print(f"{k}: {n} tokens, {1e3 * s / n:.1f} ms a token")
print("same tokens:", same)
