"""Where one round of the reference decoder goes: wall time per part, per round, on held-out math
prompts (stage-3 head, budget from argv), next to plain decoding's time per token.

    python docs/bench/cpu-smollm2-probes/round_profile.py THREADS BUDGET
"""
import collections
import sys
import time

import torch

from sglang_jetspec.reference import decoder as D
from sglang_jetspec.reference import prompts as P
from sglang_jetspec.reference.ar import generate_ar
from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
from sglang_jetspec.reference.runner import load_head_arg, resolve_model
from sglang_jetspec.reference.target import HFTarget

torch.set_num_threads(int(sys.argv[1]))
tgt = HFTarget(resolve_model(None))
dec = ReferenceDecoder(tgt, load_head_arg(None, tgt), TreeSettings(budget=int(sys.argv[2]), width=7))
spent, calls = collections.defaultdict(float), collections.Counter()


def timed(obj, name, label):
    f = getattr(obj, name)

    def g(*a, **k):
        t = time.perf_counter()
        r = f(*a, **k)
        spent[label] += time.perf_counter() - t
        calls[label] += 1
        return r
    setattr(obj, name, g)


timed(dec, "_draft", "head draft")
timed(D, "build_tree", "tree build")
timed(D, "keep_cache_rows", "KV compaction")
timed(tgt, "forward", "verify forward")
timed(tgt, "lm_head", "lm_head (visited nodes)")
enc = P.encode_prompts(tgt.tokenizer, P.read_prompts("data/prompts/math.heldout.jsonl")[:3])
ref_s = tokens = rounds = 0
for ids in enc:
    r = dec.generate(ids, 128)
    ref_s, tokens, rounds = ref_s + r.seconds, tokens + len(r.output_ids), rounds + r.rounds
ar_s = sum(generate_ar(tgt, ids, 128).seconds for ids in enc)
print(f"reference {tokens / ref_s:.1f} tok/s, plain {tokens / ar_s:.1f} tok/s; {rounds} rounds, "
      f"{tokens / rounds:.2f} tokens per round, {ref_s / rounds * 1e3:.1f} ms per round, "
      f"plain {ar_s / tokens * 1e3:.1f} ms per token")
for k in spent:  # the verify forward's count includes each prompt's prefill (3 calls)
    print(f"  {k:24s} {spent[k] / rounds * 1e3:6.1f} ms per round ({calls[k] / rounds:.2f} calls per round)")
