"""Serving loads through SGLang's own load generator (`python -m sglang.bench_serving`):
Poisson arrivals at each request rate, TTFT, inter-token latency and output throughput, on the
plain server and on the JETSPEC server (its server budget), same prompts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

KEEP = ("request_rate", "completed", "duration", "output_throughput", "mean_ttft_ms", "median_ttft_ms",
        "p99_ttft_ms", "mean_itl_ms", "median_itl_ms", "p99_itl_ms", "mean_e2e_latency_ms", "accept_length")


def write_dataset(plan, path: Path) -> int:
    """bench_serving's `custom` dataset: one conversation per prompt (the answer turn only sets
    nothing here; --sharegpt-output-len fixes the output length)."""
    n = 0
    with open(path, "w") as f:
        for items in plan.workloads.values():
            for it in items[: plan.serving_prompts]:
                f.write(json.dumps({"conversations": [{"content": it.prompt}, {"content": "x"}]}) + "\n")
                n += 1
    return n


def bench_serving_command(url: str, model: str, dataset: Path, num_prompts: int, output_len: int,
                          rate: float, out_file: Path) -> list[str]:
    return [sys.executable, "-m", "sglang.bench_serving", "--backend", "sglang", "--base-url", url,
            "--dataset-name", "custom", "--dataset-path", str(dataset), "--num-prompts", str(num_prompts),
            "--sharegpt-output-len", str(output_len), "--tokenizer", str(model), "--apply-chat-template",
            "--request-rate", str(rate), "--seed", "1", "--disable-tqdm", "--output-file", str(out_file)]


def parse_result(out_file: Path) -> dict:
    """The last record bench_serving appended, reduced to the fields the report shows."""
    lines = [ln for ln in out_file.read_text().splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError(f"bench_serving wrote nothing to {out_file}")
    rec = json.loads(lines[-1])
    return {k: rec.get(k) for k in KEEP}


def run_serving_sweep(server, key: str, plan, log_dir: Path, progress=print) -> list[dict]:
    dataset = log_dir / "serving_prompts.jsonl"
    n = write_dataset(plan, dataset)
    out = []
    for rate in plan.serving_rates:
        out_file = log_dir / f"serving_{key}_{rate:g}.jsonl"
        out_file.unlink(missing_ok=True)
        cmd = bench_serving_command(server.url, plan.model, dataset, n, plan.max_new_tokens, rate, out_file)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"bench_serving failed on the {key} server at rate {rate}:\n"
                               f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
        rec = dict(parse_result(out_file), server=key, budget=None if key == "ar" else server.spec.budget)
        progress(f"[bench] serving {key:8} rate {rate:g}/s: {rec['output_throughput']:.2f} tok/s, "
                 f"TTFT {rec['mean_ttft_ms']:.0f} ms, ITL {rec['mean_itl_ms']:.0f} ms")
        out.append(rec)
    return out
