"""Greedy output of penalised requests on three real SGLang servers: plain (overlap scheduling,
SGLang's default), plain with --disable-overlap-schedule, and JETSPEC (shipped head, budget 8).
Prints, per penalty and held-out prompt, the first token where each pair of outputs parts (None =
identical over 48 tokens). Run from the repository root:
    PYTHONPATH=tests python docs/bench/cpu-smollm2-penalties-overlap/probe.py > docs/bench/cpu-smollm2-penalties-overlap/output.txt
"""
import sys
import tempfile
import time
from pathlib import Path

from server_harness import STARTUP_TIMEOUT_S, Server
from test_integration_server_parity import _prompts

from sglang_jetspec.model_store import default_head_dir, model_path
from sglang_jetspec.reference.prompts import encode_prompts
from sglang_jetspec.reference.target import HFTarget

model = model_path("smollm2")
prompts = encode_prompts(HFTarget(model).tokenizer, _prompts())
logs = Path(tempfile.mkdtemp())
servers = {}


def parts(a, b):
    return next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), None)


try:
    servers["plain"] = Server(model, logs / "plain.log")
    servers["plain_no_overlap"] = Server(model, logs / "plain_no_overlap.log", "--disable-overlap-schedule")
    servers["jetspec"] = Server(model, logs / "jetspec.log", "--speculative-algorithm", "JETSPEC",
                                "--speculative-draft-model-path", str(default_head_dir(model)),
                                "--speculative-num-draft-tokens", "8")
    deadline = time.time() + STARTUP_TIMEOUT_S
    for s in servers.values():
        s.wait_ready(deadline)
    for extra in ({"repetition_penalty": 1.4}, {"frequency_penalty": 1.0}, {"presence_penalty": 1.5}):
        for i in range(0, 16, 3):
            out = {k: s.generate(prompts[i], 48, 0.0, **extra)["output_ids"] for k, s in servers.items()}
            print(f"{extra} prompt {i}: plain vs jetspec {parts(out['plain'], out['jetspec'])} | "
                  f"no-overlap vs jetspec {parts(out['plain_no_overlap'], out['jetspec'])} | "
                  f"plain vs no-overlap {parts(out['plain'], out['plain_no_overlap'])}", flush=True)
finally:
    for s in servers.values():
        s.kill()
