"""`python -m launch.bench` end to end on a 2-prompt workload: real SGLang servers (plain, JETSPEC
with the shipped head at a static width and with the adaptive width, SGLang's NGRAM), the JSON schema of results.json, the report and plots,
and greedy outputs equal to plain decoding for every method."""

import json

import pytest

pytestmark = pytest.mark.slow

RESULT_KEYS = {
    "label": str, "method": str, "workload": str, "batch_size": int, "requests": int,
    "output_tokens": int, "wall_s": float, "tokens_per_s": float, "verify_rounds": int,
    "accept_length": float, "accept_hist": list, "outputs": list,
}


def test_bench_runs_end_to_end_and_writes_its_schema(tmp_path, smollm2_dir, smollm2_target):
    from launch.bench import main
    from sglang_jetspec.reference.parity import check_parity
    from sglang_jetspec.reference.prompts import encode_prompts

    work = tmp_path / "gsm8k_tiny.jsonl"
    questions = ["Tom has 3 apples and buys 5 more. How many apples does he have?",
                 "Write a Python function that returns the square of a number."]
    work.write_text("".join(json.dumps({"question": q, "answer": "#### 0"}) + "\n" for q in questions))
    out = tmp_path / "bench"
    main(["--model", str(smollm2_dir), "--workload", str(work), "--batch-sizes", "1,2", "--budgets", "8,auto",
          "--methods", "ar,jetspec,chain,ngram", "--max-new-tokens", "16", "--num-prompts", "2",
          "--warmup-passes", "1", "--out", str(out)])

    report = json.loads((out / "results.json").read_text())
    assert report["schema_version"] == 1 and report["skipped"] == {}
    assert {"machine", "plan", "results", "serving", "seconds"} <= set(report)
    assert report["plan"]["warmup_passes"] == 1
    results = report["results"]
    labels = {(r["label"], r["batch_size"]) for r in results}
    assert labels == {(lab, bs) for lab in ("ar", "jetspec@8", "jetspec@auto", "chain@16", "ngram")
                      for bs in (1, 2)}
    for r in results:
        for key, typ in RESULT_KEYS.items():
            assert isinstance(r[key], typ), (key, r[key])
        assert r["workload"] == "gsm8k_tiny" and r["requests"] == 2
        assert r["speedup"] > 0 and r["tokens_per_s"] > 0
        if r["method"] in ("jetspec", "chain"):
            # the worker's counters reached the report: one histogram entry per request-round
            assert sum(r["accept_hist"]) > 0 and r["ms_per_round"]["verify"] > 0
            assert r["nodes_per_request"] <= (r["budget"] or 16)  # auto: at most the largest budget
            assert r["accept_length"] >= 1.0
    chain = [r for r in results if r["method"] == "chain"]
    assert all(r["nodes_per_request"] <= 16 for r in chain)
    auto = [r for r in results if r["label"] == "jetspec@auto"]
    assert all(1 <= r["nodes_per_request"] <= 8 for r in auto)  # the adaptive server's max = largest budget

    # lossless: every method's greedy tokens equal ar's (a near-tie is reported, not hidden)
    ids = encode_prompts(smollm2_target.tokenizer, questions)
    ar = {r["batch_size"]: r["outputs"] for r in results if r["method"] == "ar"}
    for r in results:
        for prompt, want, got in zip(ids, ar[r["batch_size"]], r["outputs"]):
            if want != got:
                rep = check_parity(smollm2_target.model, prompt, want, got)
                assert rep.near_tie, f"{r['label']} bs {r['batch_size']}: {rep}"

    md = (out / "report.md").read_text()
    assert "| gsm8k_tiny | 1 | jetspec@8 |" in md and "Time per round" in md
    for png in ("speedup_vs_budget.png", "accept_hist.png", "round_breakdown.png"):
        assert (out / png).stat().st_size > 1000, png
