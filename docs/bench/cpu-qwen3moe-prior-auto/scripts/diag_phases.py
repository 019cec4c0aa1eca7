"""Where does an adaptive-width round's time go next to a static one? Two real servers (static
budget B, adaptive up to B), same head; the first N prompts of a bundled set sent to each in
turn, three passes (the first a warm-up), at batch bs; prints per round the wall time and the
worker's phases (draft, tree, verify, accept), nodes and accepted length per request.

    python docs/bench/cpu-qwen3moe-prior-auto/scripts/diag_phases.py models/qwen3moe-tiny \
        models/qwen3moe-tiny-jetspec code 1 16 12
"""
import sys, time
from concurrent.futures import ThreadPoolExecutor
from transformers import AutoTokenizer
from sglang_jetspec.integration.server_process import ServerSpec, LocalServer
from sglang_jetspec.bench.workloads import load_workload
from sglang_jetspec.bench.runner import jetspec_counters, flush_cache

model, head, workload, bs, budget, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
tok = AutoTokenizer.from_pretrained(model)
items = load_workload(workload, n)
prompts = [tok.apply_chat_template([{"role": "user", "content": it.prompt}], add_generation_prompt=True, tokenize=True) for it in items]
prompts = [list(p["input_ids"]) if hasattr(p, "keys") else list(p) for p in prompts]
SLEEP = ["--sleep-on-idle"]
servers = {}
for key, env in (("static", {"SGLANG_JETSPEC_BUDGET": "static"}), ("auto", {"SGLANG_JETSPEC_BUDGET": "adaptive", "SGLANG_JETSPEC_KV_RESERVE": "follow"})):
    spec = ServerSpec(model, head, budget=budget, max_running_requests=max(bs, 1), max_total_tokens=8192)
    servers[key] = LocalServer(spec, log_path=f"build/diag-{key}.log", env=env).start()
for s in servers.values():
    s.wait_ready()

def run(s):
    flush_cache(s)
    b = jetspec_counters(s)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(bs) as pool:
        reps = list(pool.map(lambda ids: s.post("/generate", {"input_ids": ids, "sampling_params": {"temperature": 0.0, "max_new_tokens": 48}}), prompts))
    wall = time.perf_counter() - t0
    a = jetspec_counters(s)
    return wall, sum(len(r["output_ids"]) for r in reps), b, a

tot = {k: None for k in servers}
for rep in range(3):
    for k, s in servers.items():
        wall, toks, b, a = run(s)
        if rep == 0:
            continue  # warm-up pass (adaptive learns)
        d = {p: a["seconds"][p] - b["seconds"][p] for p in a["seconds"]}
        r = a["rounds"] - b["rounds"]
        rr = a["request_rounds"] - b["request_rounds"]
        acc = (a["committed"] - b["committed"]) / rr
        nodes = (a["nodes"] - b["nodes"]) / rr
        ph = " ".join(f"{p} {1000*v/r:.2f}" for p, v in d.items())
        print(f"{k:7s} rep{rep} {toks/wall:7.1f} tok/s rounds {r} wall/round {1000*wall/r:.1f} ms | {ph} | sum {1000*sum(d.values())/r:.1f} | nodes {nodes:.1f} acc {acc:.2f}", flush=True)
for s in servers.values():
    s.stop()
