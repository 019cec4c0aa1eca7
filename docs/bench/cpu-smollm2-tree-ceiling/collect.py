"""Record every round of the greedy reference decoder (stage-6 head, budget 32, width 7): each
round's per-depth top-7 draft tables, and each answer, so sim.py / oracle.py can score other trees
for the same rounds. Usage (repo root, env as in report.md):
    python docs/bench/cpu-smollm2-tree-ceiling/collect.py OUT.jsonl LO HI
records held-out prompts LO..HI-1 of each set. Instrumentation only: it wraps the decoder's tree
builder to see its inputs and returns the same tree."""
import sys, json, torch
import sglang_jetspec.reference.decoder as D
from sglang_jetspec.core.checkpoint import load_head
from sglang_jetspec.reference.prompts import encode_prompts, read_prompts
from sglang_jetspec.reference.runner import resolve_model
from sglang_jetspec.reference.target import HFTarget

out_path, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
target = HFTarget(resolve_model(None))
head = load_head("models/smollm2-135m-jetspec", device="cpu", dtype=target.dtype, draft_vocab=True)
rec = []
orig = D.build_tree_from_top
def spy(anchor, vals, ids, budget, width, max_depth=None):
    rec.append((vals[:, :7].tolist(), ids[:, :7].tolist()))
    return orig(anchor, vals, ids, budget, width, max_depth)
D.build_tree_from_top = spy
dec = D.ReferenceDecoder(target, head, D.TreeSettings(budget=32, width=7))
with open(out_path, "w") as f:
    for s in ("code", "math", "chat"):
        ps = encode_prompts(target.tokenizer, read_prompts(f"data/prompts/{s}.heldout.jsonl")[lo:hi])
        for i, ids in enumerate(ps):
            rec.clear()
            r = dec.generate(ids, 128)
            f.write(json.dumps({"set": s, "i": lo + i, "out": r.output_ids, "accepted": r.accepted,
                                "tables": rec}) + "\n"); f.flush()
            print(s, lo + i, len(r.output_ids), len(r.accepted), flush=True)
