"""Tokens a verify round commits for SAMPLED requests through the real SGLang server, under the two
host sampling rules (SGLANG_JETSPEC_SAMPLING_RULE): rrs (trees redrawn from the draft, recursive
rejection sampling; the default) and walk (the greedy tree, follow the target's draw). Both are
lossless (tests/test_integration_server_parity.py checks their joint law); this measures what
each accepts. Two JETSPEC servers (shipped head, server budget 32, static widths), the first 10
held-out prompts of each set, 128 new tokens, one request at a time, the two servers taking
turns prompt by prompt; budget 8 via the request's custom_params. Run from the repository root:
    PYTHONPATH=tests python docs/bench/cpu-smollm2-server-sampling-rules/run.py \
        > docs/bench/cpu-smollm2-server-sampling-rules/output.txt
"""
import json
import sys
import tempfile
import time
from pathlib import Path

from server_harness import ROOT, STARTUP_TIMEOUT_S, Server

from sglang_jetspec.model_store import default_head_dir, model_path
from sglang_jetspec.reference.prompts import encode_prompts
from sglang_jetspec.reference.target import HFTarget

SETS, PROMPTS, NEW_TOKENS = ("code", "math", "chat"), 10, 128
TEMPERATURES, BUDGETS, RULES = (0.7, 1.0), (8, 32), ("walk", "rrs")

model = model_path("smollm2")
tok = HFTarget(model).tokenizer
prompts = {}
for name in SETS:
    with open(ROOT / "data" / "prompts" / f"{name}.heldout.jsonl") as f:
        prompts[name] = encode_prompts(tok, [json.loads(line)["prompt"] for line in f][:PROMPTS])
logs = Path(tempfile.mkdtemp())
servers = {}
try:
    for rule in RULES:
        servers[rule] = Server(model, logs / f"{rule}.log", "--speculative-algorithm", "JETSPEC",
                               "--speculative-draft-model-path", str(default_head_dir(model)),
                               "--speculative-num-draft-tokens", "32",
                               env={"SGLANG_JETSPEC_SAMPLING_RULE": rule})
    deadline = time.time() + STARTUP_TIMEOUT_S
    for s in servers.values():
        s.wait_ready(deadline)
        s.mark()
    print(f"{PROMPTS} held-out prompts a set, {NEW_TOKENS} new tokens, one request at a time; "
          "tokens/round = completion tokens / verify rounds (the prefill's token excluded)")
    print("| temperature | budget | set | walk tokens/round | rrs tokens/round | rrs / walk | walk tok/s | rrs tok/s |")
    print("|---|---|---|---|---|---|---|---|")
    for temp in TEMPERATURES:
        for budget in BUDGETS:
            for name in SETS:
                tokens = {r: 0 for r in RULES}
                rounds = {r: 0 for r in RULES}
                secs = {r: 0.0 for r in RULES}
                for i, ids in enumerate(prompts[name]):
                    order = RULES if i % 2 == 0 else RULES[::-1]
                    for rule in order:
                        t0 = time.perf_counter()
                        out = servers[rule].generate(ids, NEW_TOKENS, temp,
                                                     custom_params={"jetspec": {"budget": budget}})
                        secs[rule] += time.perf_counter() - t0
                        meta = out["meta_info"]
                        tokens[rule] += meta["completion_tokens"] - 1
                        rounds[rule] += meta["spec_verify_ct"]
                per = {r: tokens[r] / max(rounds[r], 1) for r in RULES}
                tps = {r: (tokens[r] + PROMPTS) / secs[r] for r in RULES}
                print(f"| {temp} | {budget} | {name} | {per['walk']:.3f} | {per['rrs']:.3f} | "
                      f"{per['rrs'] / per['walk']:.3f}x | {tps['walk']:.1f} | {tps['rrs']:.1f} |", flush=True)
    for rule, s in servers.items():
        assert s.proc.poll() is None and "Traceback" not in s.log_since_mark(), rule
finally:
    for s in servers.values():
        s.kill()
