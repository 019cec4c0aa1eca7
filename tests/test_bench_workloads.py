"""launch.bench's workload loaders (bundled sets, shared prefixes, GSM8K / MATH-500 / HumanEval /
MT-Bench shaped JSONL written here) and its configuration planning."""

import json

import pytest

from sglang_jetspec.bench.methods import (
    Config, parse_batch_sizes, parse_budgets, parse_mixed_load, plan_configs, servers_needed, max_budget)
from sglang_jetspec.bench.workloads import BUNDLED, load_workload, read_workload_file, shared_prefix_items


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_each_public_format_is_recognised(tmp_path):
    f = _write(tmp_path / "mixed.jsonl", [
        {"question": "Natalia sold 48 clips. How many?", "answer": "#### 72"},           # GSM8K
        {"problem": "Find $x$ if $2x=6$.", "solution": "x=3", "answer": "3", "unique_id": "test/1"},  # MATH-500
        {"task_id": "HumanEval/0", "prompt": "def add(a, b):\n", "canonical_solution": "", "test": ""},
        {"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Now a limerick."]},  # MT-Bench
        {"prompt": "Say hi."},
    ])
    items = read_workload_file(f)
    assert [i.kind for i in items] == ["gsm8k", "math500", "humaneval", "mtbench", "prompt"]
    assert items[0].prompt.startswith("Natalia")
    assert items[1].id == "test/1" and items[1].prompt == "Find $x$ if $2x=6$."
    assert items[2].id == "HumanEval/0" and items[2].prompt.endswith("def add(a, b):\n")
    assert items[3].prompt == "Write a haiku." and items[3].id == "81"


def test_bad_files_name_the_line_and_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"bad.jsonl:2: unknown line shape with keys \['text'\]"):
        read_workload_file(_write(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"text": "no"}]))
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a"}\n{nope\n')
    with pytest.raises(ValueError, match="broken.jsonl:2: not valid JSON"):
        read_workload_file(tmp_path / "broken.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        read_workload_file(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match="MT-Bench line has no non-empty string"):
        read_workload_file(_write(tmp_path / "mt.jsonl", [{"turns": []}]))
    with pytest.raises(ValueError, match="neither a bundled set"):
        load_workload("nonsense")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_workload(str(tmp_path / "missing.jsonl"))


def test_bundled_sets_load_and_shared_prefix_items_share_their_document():
    for name in BUNDLED:
        items = load_workload(name, limit=3)
        assert len(items) == 3 and all(i.prompt.strip() for i in items)
    items = shared_prefix_items(["DOC A " * 50, "DOC B " * 50], ("Q1?", "Q2?"))
    assert [i.id for i in items] == ["doc0-q0", "doc1-q0", "doc0-q1", "doc1-q1"]
    assert items[0].prompt.split("\n\n")[0] == items[2].prompt.split("\n\n")[0]
    bundled = load_workload("shared-prefix")
    docs = {i.prompt.rsplit("\n\n", 1)[0] for i in bundled}
    assert len(docs) * 4 == len(bundled) and min(len(d) for d in docs) > 200


def test_plans_put_ar_first_and_share_one_server_per_head():
    configs = plan_configs(["jetspec", "chain", "bidirectional", "ngram"], [8, 32], depth=15)
    assert configs[0] == Config("ar", "ar")
    labels = [c.label for c in configs]
    assert labels == ["ar", "jetspec@8", "jetspec@32", "chain@16", "bidirectional@8", "bidirectional@32", "ngram"]
    assert servers_needed(configs) == ["ar", "jetspec", "bidirectional", "ngram"]
    assert max_budget(configs, "jetspec") == 32 and max_budget(configs, "ar") is None
    chain = configs[3]
    assert chain.custom_params() == {"jetspec": {"budget": 16, "width": 1}}
    assert configs[1].custom_params() == {"jetspec": {"budget": 8}}
    assert configs[0].custom_params() is None and configs[-1].custom_params() is None
    auto = plan_configs(["jetspec"], [8, 32], depth=15, auto=["auto"])
    assert [c.label for c in auto] == ["ar", "jetspec@8", "jetspec@32", "jetspec@auto"]
    both = plan_configs(["jetspec"], [8], depth=15, auto=["auto", "auto-maxreserve"])
    assert servers_needed(both) == ["ar", "jetspec", "jetspec-auto", "jetspec-auto-maxreserve"]
    assert both[-1].label == "jetspec@auto-maxreserve" and max_budget(both, "jetspec-auto-maxreserve") == 8
    from sglang_jetspec.bench.suite import server_env
    assert server_env("jetspec-auto-maxreserve") == {"SGLANG_JETSPEC_BUDGET": "adaptive",
                                                     "SGLANG_JETSPEC_KV_RESERVE": "max"}
    assert server_env("jetspec-auto")["SGLANG_JETSPEC_KV_RESERVE"] == "follow"
    assert server_env("jetspec") == {"SGLANG_JETSPEC_BUDGET": "static"} and server_env("ar") == {}
    assert auto[-1].custom_params() is None  # the adaptive server's own width choice
    assert servers_needed(auto) == ["ar", "jetspec", "jetspec-auto"]
    assert max_budget(auto, "jetspec-auto") == 32
    # the chain shares the static server (budget 16 there) but is no tree budget of the adaptive one
    with_chain = plan_configs(["jetspec", "chain"], [8], depth=15, auto=["auto"])
    assert max_budget(with_chain, "jetspec") == 16 and max_budget(with_chain, "jetspec-auto") == 8


def test_standalone_runs_sglangs_own_algorithm_with_the_given_draft_model():
    from sglang_jetspec.bench.suite import BenchPlan, server_spec, server_env

    configs = plan_configs(["jetspec", "standalone"], [8], depth=15)
    assert [c.label for c in configs] == ["ar", "jetspec@8", "standalone"]
    assert servers_needed(configs) == ["ar", "jetspec", "standalone"] and configs[-1].custom_params() is None
    plan = BenchPlan(model="target", heads={"jetspec": "head"}, configs=configs, workloads={}, batch_sizes=[1, 4],
                     max_new_tokens=8, num_prompts=4, standalone_draft="draft", standalone_steps=3)
    extra = server_spec(plan, "standalone").extra
    at = extra.index("--speculative-algorithm")
    assert extra[at:at + 10] == ["--speculative-algorithm", "STANDALONE", "--speculative-draft-model-path", "draft",
                                 "--speculative-num-steps", "3", "--speculative-eagle-topk", "1",
                                 "--speculative-num-draft-tokens", "4"]
    assert server_env("standalone") == {} and "--context-length" not in extra  # no configs to read
    plan.standalone_draft = None
    with pytest.raises(ValueError, match="method standalone needs a draft model"):
        server_spec(plan, "standalone")
    from launch.bench import main
    with pytest.raises(SystemExit, match="method standalone needs --standalone-draft DIR"):
        main(["--methods", "ar,standalone", "--out", "unused"])


def test_standalone_draft_with_a_shorter_context_serves_at_the_drafts_length(tmp_path):
    from sglang_jetspec.bench.suite import BenchPlan, server_spec

    for name, n in (("target", 8192), ("short", 4096), ("long", 32768)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"max_position_embeddings": n}))
    plan = BenchPlan(model=str(tmp_path / "target"), heads={}, configs=plan_configs(["standalone"], [], depth=15),
                     workloads={}, batch_sizes=[1], max_new_tokens=8, num_prompts=1,
                     standalone_draft=str(tmp_path / "short"))
    extra = server_spec(plan, "standalone").extra
    assert extra[extra.index("--context-length") + 1] == "4096"
    plan.standalone_draft = str(tmp_path / "long")
    assert "--context-length" not in server_spec(plan, "standalone").extra


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="auto needs a static budget as well or --auto-max-width"):
        parse_budgets("auto")
    assert parse_budgets("auto,auto-maxreserve", auto_max_width=64) == ([], ["auto", "auto-maxreserve"])
    only_auto = plan_configs(["jetspec"], [], depth=15, auto=["auto"])
    assert [c.label for c in only_auto] == ["ar", "jetspec@auto"] and max_budget(only_auto, "jetspec-auto", 64) == 64
    assert parse_budgets("8,auto") == ([8], ["auto"])
    assert parse_budgets("auto-maxreserve,8,auto") == ([8], ["auto", "auto-maxreserve"])
    with pytest.raises(ValueError, match="budget 1 must be >= 2"):
        parse_budgets("1,8")
    with pytest.raises(ValueError, match="budget 'x' is not an integer"):
        parse_budgets("x")
    with pytest.raises(ValueError, match="batch size 0 must be >= 1"):
        parse_batch_sizes("0")
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['eagle9'\]"):
        plan_configs(["eagle9"], [8], 15)
    assert parse_budgets("64,8,8") == ([8, 64], [])
    assert parse_mixed_load("1,16,4") == [1, 16, 4]  # phase order kept
    with pytest.raises(ValueError, match="mixed-load concurrency 0 must be >= 1"):
        parse_mixed_load("1,0")


def test_mixed_load_splits_prompts_into_phases_that_keep_their_concurrency_busy():
    from sglang_jetspec.bench.runner import _split

    parts = _split(list(range(42)), [1, 16, 4])
    assert [c for c, _ in parts] == [1, 16, 4]
    assert sum(len(p) for _, p in parts) == 42 and [x for _, p in parts for x in p] == list(range(42))
    assert all(len(p) >= c for c, p in parts)
    with pytest.raises(ValueError, match="too few for the mixed load"):
        _split([1, 2], [1, 16, 4])


def test_report_renders_tables_and_plots_from_a_results_file(tmp_path):
    """The markdown report and the three plots from a small synthetic results.json."""
    from sglang_jetspec.bench.report import make_plots, write_markdown

    def row(label, method, budget, bs, tps, hist=(), ms=None, phases=None):
        return {"label": label, "method": method, "budget": budget, "workload": "code", "batch_size": bs,
                "requests": 4, "output_tokens": 100, "wall_s": 100 / tps, "tokens_per_s": tps,
                "verify_rounds": 50, "accept_length": 2.0, "accept_hist": list(hist), "outputs": [],
                "nodes_per_request": None if budget is None else float(budget), "ms_per_round": ms,
                "speedup": tps / 10.0, "matches_ar": 4, "phases": phases,
                "retracted": 2 if budget is None else 0, "prefill_tokens": 300, "cached_tokens": 100}
    ms = {"draft": 5.0, "tree": 1.0, "verify": 20.0, "accept": 2.0, "other": 3.0}
    results = [row("ar", "ar", None, 1, 10.0), row("jetspec@8", "jetspec", 8, 1, 15.0, (0, 3, 5, 2), ms),
               row("jetspec@32", "jetspec", 32, 1, 12.0, (0, 2, 5, 3), ms),
               row("jetspec@auto", "jetspec", None, 1, 16.0, (0, 3, 5, 2), ms),
               row("ar", "ar", None, 0, 20.0, phases=[1, 4]), row("jetspec@8", "jetspec", 8, 0, 22.0, phases=[1, 4])]
    report = {"machine": {"platform": "p", "cpus": 2, "processor": "x", "gpu": None, "torch": "t", "sglang": "s",
                          "date": "d"}, "plan": {"model": "m", "heads": {}, "max_new_tokens": 8, "workloads": {"code": 4},
                                                 "num_prompts": 4}, "results": results, "skipped": {"ngram": "needs a GPU"},
              "serving": [], "seconds": 60.0}
    plots = make_plots(report, tmp_path)
    assert plots == ["speedup_vs_budget.png", "accept_hist.png", "round_breakdown.png"]
    md = write_markdown(report, tmp_path, "python -m launch.bench ...", plots).read_text()
    assert "| code | 1 | jetspec@auto | 1.60x |" in md  # fastest at batch 1
    assert "| code | 1 | jetspec@auto | 16.00 |" in md and "| code | mixed 1/4 | jetspec@8 | 22.00 |" in md
    assert "| 8 | 1.50x | 1.07 |" in md  # best static budget 8, auto / best static = 16/15
    assert "`ngram`: needs a GPU" in md
    assert "| code | 1 | jetspec@auto | 16.00 | 2 | 400 | 25% |" in md  # KV pool / radix cache table
    assert "rounds per verify width" not in md  # no adaptive width counts in these rows


def test_width_counts_are_the_policy_histogram_delta_and_the_report_lists_them():
    from sglang_jetspec.bench.report import widths_table
    from sglang_jetspec.bench.runner import width_delta

    before = {"mode": "adaptive", "width_hist": {"1": 5, "8": 2}, "probes": 1, "close_calls": 2}
    after = {"mode": "adaptive", "width_hist": {"1": 9, "8": 2, "16": 3, "2": 1}, "probes": 4, "close_calls": 3}
    assert width_delta(before, after) == {"1": 4, "2": 1, "16": 3, "probes": 3, "close_calls": 1}
    assert width_delta({"mode": "static"}, {"mode": "static", "width_hist": {"8": 3}}) is None
    assert width_delta(None, after) is None
    r = {"workload": "math", "batch_size": 1, "label": "jetspec@auto", "tokens_per_s": 12.5,
         "accept_length": 2.4, "widths": width_delta(before, after)}
    assert widths_table([r]).splitlines()[-1] == "| math | 1 | jetspec@auto | 12.50 | 2.40 | 1: 4, 2: 1, 16: 3 | 3 | 1 |"
    assert widths_table([dict(r, widths=None)]) == ""


def test_server_log_counts_retractions_and_radix_hits():
    from sglang_jetspec.bench.runner import log_counts

    log = ("[2026] Prefill batch, #new-seq: 2, #new-token: 120, #cached-token: 0, token usage: 0.01\n"
           "[2026] KV cache pool is full. Retract requests. #retracted_reqs: 3, #new_tokens_gained: 512\n"
           "[2026] Prefill batch, #new-seq: 1, #new-token: 7, #cached-token: 200, token usage: 0.5\n"
           "[2026] KV cache pool is full. Retract requests. #retracted_reqs: 1, #new_tokens_gained: 9\n")
    assert log_counts(log) == (4, 127, 200)
    assert log_counts("") == (0, 0, 0)


def test_expert_aware_off_pairs_every_static_budget_and_the_report_shows_experts(tmp_path):
    from sglang_jetspec.bench.report import experts_table
    from sglang_jetspec.bench.runner import expert_delta
    from sglang_jetspec.bench.suite import server_env

    configs = plan_configs(["jetspec"], [8, 16], depth=15, expert_off=True)
    assert [c.label for c in configs] == ["ar", "jetspec@8", "jetspec@16", "jetspec@8-noexpert", "jetspec@16-noexpert"]
    assert configs[3].custom_params() == {"jetspec": {"budget": 8}}  # same per-request budget
    assert servers_needed(configs) == ["ar", "jetspec", "jetspec-noexpert"]
    assert server_env("jetspec-noexpert") == {"SGLANG_JETSPEC_BUDGET": "static", "SGLANG_JETSPEC_EXPERT_AWARE": "off"}
    assert server_env("jetspec-noexpert", "t.jsonl")["SGLANG_JETSPEC_EXPERT_TRACE"] == "t.jsonl"
    assert "SGLANG_JETSPEC_EXPERT_TRACE" not in server_env("jetspec", "t.jsonl")
    assert max_budget(configs, "jetspec-noexpert") == 16

    def snap(rounds, distinct, secs, kept, cand):
        return {"rounds": rounds, "prune": True, "distinct_per_layer_sum": distinct, "verify_seconds": secs,
                "kept_nodes": kept, "candidate_nodes": cand, "recall_per_layer": [0.5, 0.75],
                "precision_per_layer": [0.6, 0.7]}
    d = expert_delta(snap(10, [50.0, 60.0], 1.0, 80, 100), snap(20, [110.0, 120.0], 1.5, 150, 200))
    assert d["mean_distinct_per_verify"] == pytest.approx(120 / 20) and d["verify_ms_per_round"] == pytest.approx(50.0)
    assert d["kept_share"] == pytest.approx(0.7) and expert_delta(snap(3, [1.0, 1.0], 0, 1, 1), snap(3, [1.0, 1.0], 0, 1, 1)) == {"rounds": 0}
    assert d["gated_rounds"] == 0  # snapshots without the gate's counter (older servers)
    assert expert_delta(dict(snap(10, [50.0, 60.0], 1.0, 80, 100), gated_rounds=2),
                        dict(snap(20, [110.0, 120.0], 1.5, 150, 200), gated_rounds=9))["gated_rounds"] == 7
    # one held bound per tree width: the bound of the width the measurement's rounds observed most
    by = lambda n32, n64: {"32": {"bound": 0.01, "labelled": n32, "probes": 0},  # noqa: E731
                           "64": {"bound": 0.04, "labelled": n64, "probes": 1}}
    held = lambda n32, n64: {"bound": 0.02, "by_width": by(n32, n64)}  # noqa: E731
    assert expert_delta(dict(snap(10, [50.0, 60.0], 1.0, 80, 100), held=held(5, 50)),
                        dict(snap(20, [110.0, 120.0], 1.5, 150, 200), held=held(30, 52)))["loss_bound"] == 0.01
    assert expert_delta(dict(snap(10, [50.0, 60.0], 1.0, 80, 100), held=held(5, 50)),
                        dict(snap(20, [110.0, 120.0], 1.5, 150, 200), held=held(6, 80)))["loss_bound"] == 0.04
    assert expert_delta(snap(10, [50.0, 60.0], 1.0, 80, 100),
                        dict(snap(20, [110.0, 120.0], 1.5, 150, 200), held={"bound": 0.02}))["loss_bound"] == 0.02
    row = {"workload": "math", "batch_size": 1, "phases": None, "label": "jetspec@16", "tokens_per_s": 12.0,
           "accept_length": 2.5, "experts": d}
    table = experts_table([row, dict(row, experts=None)])
    assert "| math | 1 | jetspec@16 | 12.00 | 2.50 | 6.00 | 50.0 | 70% | - | 0.50 0.75 |" in table
    assert table.count("\n") == 2  # header, rule, one row
    assert len({line.count("|") for line in table.splitlines()}) == 1  # as many cells in every line
    assert experts_table([dict(row, experts=None)]) == ""


def test_draft_vocab_off_pairs_every_static_budget_on_its_own_server():
    from sglang_jetspec.bench.suite import server_env

    configs = plan_configs(["jetspec"], [8, 16], depth=15, auto=["auto"], draft_vocab_off=True)
    assert [c.label for c in configs] == ["ar", "jetspec@8", "jetspec@16", "jetspec@8-fullvocab",
                                          "jetspec@16-fullvocab", "jetspec@auto"]
    assert configs[4].custom_params() == {"jetspec": {"budget": 16}}  # same per-request budget
    assert servers_needed(configs) == ["ar", "jetspec", "jetspec-fullvocab", "jetspec-auto"]
    assert server_env("jetspec-fullvocab") == {"SGLANG_JETSPEC_BUDGET": "static", "SGLANG_JETSPEC_DRAFT_VOCAB": "off"}
    assert "SGLANG_JETSPEC_DRAFT_VOCAB" not in server_env("jetspec")
    assert max_budget(configs, "jetspec-fullvocab") == 16


def test_pair_prior_off_pairs_every_static_budget_on_its_own_server():
    from sglang_jetspec.bench.suite import server_env

    configs = plan_configs(["jetspec"], [8, 16], depth=15, pair_prior_off=True)
    assert [c.label for c in configs] == ["ar", "jetspec@8", "jetspec@16", "jetspec@8-noprior", "jetspec@16-noprior"]
    assert configs[3].custom_params() == {"jetspec": {"budget": 8}}
    assert servers_needed(configs) == ["ar", "jetspec", "jetspec-noprior"]
    assert server_env("jetspec-noprior") == {"SGLANG_JETSPEC_BUDGET": "static", "SGLANG_JETSPEC_PAIR_PRIOR": "off"}
    assert "SGLANG_JETSPEC_PAIR_PRIOR" not in server_env("jetspec")  # the default: the folder's prior when there
    assert max_budget(configs, "jetspec-noprior") == 16


def test_pair_prior_off_needs_a_head_with_a_prior(tmp_path):
    import shutil

    from launch.bench import main
    from sglang_jetspec.model_store import model_path, shipped_head_dir

    head = tmp_path / "head"
    shutil.copytree(shipped_head_dir("qwen3moe"), head, ignore=shutil.ignore_patterns("pair_prior.safetensors"))
    with pytest.raises(SystemExit, match="--pair-prior-off .* has none"):
        main(["--model", str(model_path("qwen3moe")), "--head", str(head), "--pair-prior-off", "--out", str(tmp_path / "out")])


def test_warmup_passes_must_not_be_negative(tmp_path):
    from launch.bench import main
    from sglang_jetspec.model_store import model_path

    with pytest.raises(SystemExit, match=r"--warmup-passes -1 must be >= 0"):
        main(["--model", str(model_path("qwen3moe")), "--warmup-passes", "-1", "--out", str(tmp_path / "out")])


def test_cpu_linear_onednn_pairs_ar_and_every_static_budget():
    from sglang_jetspec.bench.runner import compare_to_ar
    from sglang_jetspec.bench.suite import server_env

    configs = plan_configs(["jetspec"], [8, 16], depth=15, onednn_linear=True)
    assert [c.label for c in configs] == ["ar", "ar-onednn", "jetspec@8", "jetspec@16",
                                          "jetspec@8-onednn", "jetspec@16-onednn"]
    assert configs[1].custom_params() is None and configs[5].custom_params() == {"jetspec": {"budget": 16}}
    assert servers_needed(configs) == ["ar", "ar-onednn", "jetspec", "jetspec-onednn"]
    assert server_env("ar-onednn") == {"SGLANG_JETSPEC_CPU_LINEAR": "onednn"}
    assert server_env("jetspec-onednn") == {"SGLANG_JETSPEC_BUDGET": "static", "SGLANG_JETSPEC_CPU_LINEAR": "onednn"}
    assert "SGLANG_JETSPEC_CPU_LINEAR" not in server_env("jetspec") and server_env("ar") == {}
    assert max_budget(configs, "jetspec-onednn") == 16

    class M:  # speedups are taken against `ar`, not against the other plain-decoding server
        def __init__(self, label, tps):
            self.label, self.method, self.workload, self.batch_size = label, "ar", "code", 1
            self.tokens_per_s, self.outputs = tps, [[1, 2]]
    ms = [M("ar", 20.0), M("ar-onednn", 30.0)]
    compare_to_ar(ms)
    assert [m.speedup for m in ms] == [1.0, 1.5]
