"""Where a reference round's time goes: the decoder's parts timed by wrapping them (probe).

    OMP_NUM_THREADS=2 python docs/bench/cpu-smollm2-reference-steploop/round_parts.py 2 6   # threads, budget

First 3 chat held-out prompts, 128 new tokens, then plain decoding (the step loop) on the same
prompts. Wrapping adds a little time to every part; the totals are the decoder's own clocks."""
import sys, time, torch
from collections import defaultdict
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
from sglang_jetspec.reference import decoder as D
from sglang_jetspec.reference.prompts import encode_prompts, read_prompts
from sglang_jetspec.reference.runner import load_head_arg, resolve_model
from sglang_jetspec.reference.target import HFTarget
from sglang_jetspec.reference.ar import generate_ar
import sglang_jetspec.core.acceptance as A

T = defaultdict(float); N = defaultdict(int)
def wrap(mod, name, key):
    f = getattr(mod, name)
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); T[key] += time.perf_counter() - t; N[key] += 1; return r
    setattr(mod, name, g)
tgt = HFTarget(resolve_model(None))
head = load_head_arg(None, tgt)
dec = ReferenceDecoder(tgt, head, TreeSettings(budget=int(sys.argv[2]) if len(sys.argv) > 2 else 6))
wrap(ReferenceDecoder, "_draft_scores", "draft")
wrap(D, "build_tree_from_top", "build_tree")
wrap(D, "accept_greedy_lazy", "accept"); wrap(D, "accept_greedy", "accept_all")
wrap(D, "keep_cache_rows", "keep_cache")
wrap(HFTarget, "lm_head", "lm_head")
orig_fwd = HFTarget.forward
def fwd(self, ids, *a, **k):
    t = time.perf_counter(); r = orig_fwd(self, ids, *a, **k); key = "verify" if k.get("tree_mask") is not None else "fwd_plain"
    T[key] += time.perf_counter() - t; N[key] += 1; return r
HFTarget.forward = fwd
prompts = encode_prompts(tgt.tokenizer, read_prompts("data/prompts/chat.heldout.jsonl")[:3])
for p in prompts:  # warm
    dec.generate(p, 16); generate_ar(tgt, p, 16)
T.clear(); N.clear()
tot = 0; rounds = 0; toks = 0
for p in prompts:
    r = dec.generate(p, 128); tot += r.seconds; rounds += r.rounds; toks += len(r.output_ids)
spec = dict(T); specn = dict(N)
T.clear(); N.clear()
ar_s = 0; ar_t = 0
for p in prompts:
    t = time.perf_counter(); r = generate_ar(tgt, p, 128); ar_s += time.perf_counter() - t; ar_t += len(r.output_ids)
print(f"spec {toks} tok {tot:.2f}s {rounds} rounds, {1000*tot/rounds:.1f} ms/round, acc {toks/rounds:.2f}")
for k, v in spec.items(): print(f"  {k:12s} {1000*v/rounds:7.2f} ms/round  calls/round {specn[k]/rounds:.2f}")
print(f"ar {ar_t} tok {ar_s:.2f}s {1000*ar_s/ar_t:.1f} ms/step; lm_head {1000*T['lm_head']/max(1,N['lm_head']):.2f} ms/call; speedup {toks/tot/(ar_t/ar_s):.2f}x")
