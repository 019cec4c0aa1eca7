"""The benchmark's markdown report and plots, from the JSON a run leaves (`results.json`).

Plots (matplotlib, Agg): speedup over ar vs budget per batch size (one panel per workload),
the accepted-length histogram per method (batch size 1), and the round-time breakdown of the
JETSPEC budgets (batch size 1). The report embeds them.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

PHASE_NAMES = ("draft", "tree", "verify", "accept", "other")


def _fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


def _batch(r) -> str:
    return "mixed " + "/".join(map(str, r["phases"])) if r.get("phases") else str(r["batch_size"])


def _groups(results):
    by = defaultdict(list)
    for r in results:
        by[(r["workload"], r["batch_size"])].append(r)
    return by


def summary_table(results: list[dict]) -> str:
    head = ("| workload | batch | method | tok/s | speedup vs ar | accept length | nodes/request "
            "| outputs = ar |\n|---|---:|---|---:|---:|---:|---:|---:|")
    rows = [head]
    for (w, _), rs in _groups(results).items():
        for r in rs:
            match = "-" if r["matches_ar"] is None else f"{r['matches_ar']}/{r['requests']}"
            rows.append(f"| {w} | {_batch(r)} | {r['label']} | {r['tokens_per_s']:.2f} | {_fmt(r['speedup'])}x "
                        f"| {r['accept_length']:.2f} | {_fmt(r['nodes_per_request'], '.1f')} | {match} |")
    return "\n".join(rows)


def best_table(results: list[dict]) -> str:
    """Per workload and batch size: the fastest configuration and its speedup."""
    rows = ["| workload | batch | fastest | speedup vs ar | best static JETSPEC budget | its speedup "
            "| auto / best static (tok/s) |", "|---|---:|---|---:|---:|---:|---:|"]
    for (w, _), rs in _groups(results).items():
        fastest = max(rs, key=lambda r: r["tokens_per_s"])
        js = [r for r in rs if r["method"] == "jetspec" and r["budget"] is not None
              and not r["label"].endswith("-onednn")]  # the opt-in CPU linear pair is no candidate
        best_js = max(js, key=lambda r: r["tokens_per_s"]) if js else None
        auto = next((r for r in rs if r["label"] == "jetspec@auto"), None)
        vs = "-" if not (auto and best_js) else f"{auto['tokens_per_s'] / best_js['tokens_per_s']:.2f}"
        rows.append(f"| {w} | {_batch(fastest)} | {fastest['label']} | {_fmt(fastest['speedup'])}x | "
                    f"{best_js['budget'] if best_js else '-'} | {_fmt(best_js['speedup'] if best_js else None)}x | {vs} |")
    return "\n".join(rows)


def breakdown_table(results: list[dict]) -> str:
    rows = ["| workload | batch | method | " + " | ".join(f"{p} ms" for p in PHASE_NAMES) + " |",
            "|---|---:|---|" + "---:|" * len(PHASE_NAMES)]
    for r in results:
        ms = r.get("ms_per_round")
        if ms:
            rows.append(f"| {r['workload']} | {_batch(r)} | {r['label']} | "
                        + " | ".join(f"{ms.get(p, 0.0):.1f}" for p in PHASE_NAMES) + " |")
    return "\n".join(rows) if len(rows) > 2 else "(no JETSPEC rounds timed)"


def kv_table(results: list[dict]) -> str:
    """Requests retracted for lack of KV and the radix cache's share of prompt tokens, per
    measurement (from the server log; the radix cache is flushed before each one)."""
    rows = ["| workload | batch | method | tok/s | retracted requests | prompt tokens | from the radix cache |",
            "|---|---:|---|---:|---:|---:|---:|"]
    for r in results:
        if r.get("prefill_tokens") is None:
            continue
        total = r["prefill_tokens"] + r["cached_tokens"]
        share = f"{100 * r['cached_tokens'] / total:.0f}%" if total else "-"
        rows.append(f"| {r['workload']} | {_batch(r)} | {r['label']} | {r['tokens_per_s']:.2f} | "
                    f"{r['retracted']} | {total} | {share} |")
    return "\n".join(rows) if len(rows) > 2 else "(no server log read)"


def experts_table(results: list[dict]) -> str:
    """MoE targets: per measurement, what the verify forwards activated (expert_delta)."""
    rows = ["| workload | batch | method | tok/s | accept length | distinct experts / layer / verify "
            "| verify ms / round | nodes kept | held loss bound (end) | recall per layer (cumulative) |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        e = r.get("experts")
        if not e or not e.get("rounds"):
            continue
        rec = " ".join(f"{x:.2f}" for x in e["recall_per_layer"])
        rows.append(f"| {r['workload']} | {_batch(r)} | {r['label']} | {r['tokens_per_s']:.2f} | "
                    f"{r['accept_length']:.2f} | {e['mean_distinct_per_verify']:.2f} | "
                    f"{e['verify_ms_per_round']:.1f} | {_fmt(e['kept_share'], '.0%')} | "
                    f"{_fmt(e.get('loss_bound'), '.4f')} | {rec} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def widths_table(results: list[dict]) -> str:
    """Adaptive servers: how many rounds verified each width, per measurement."""
    rows = ["| workload | batch | method | tok/s | accept length | rounds per verify width | curve probes "
            "| close calls |", "|---|---:|---|---:|---:|---|---:|---:|"]
    for r in results:
        w = r.get("widths")
        if not w:
            continue
        hist = ", ".join(f"{k}: {v}" for k, v in w.items() if k not in ("probes", "close_calls"))
        rows.append(f"| {r['workload']} | {_batch(r)} | {r['label']} | {r['tokens_per_s']:.2f} | "
                    f"{r['accept_length']:.2f} | {hist} | {w.get('probes', '-')} | {w.get('close_calls', '-')} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def serving_table(serving: list[dict]) -> str:
    if not serving:
        return "(not run: pass --serving-rates)"
    rows = ["| server | budget | rate (req/s) | completed | output tok/s | mean TTFT ms | mean ITL ms | p99 ITL ms | accept length |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in serving:
        rows.append(f"| {s['server']} | {s['budget'] or '-'} | {s['request_rate']} | {s['completed']} | "
                    f"{_fmt(s['output_throughput'])} | {_fmt(s['mean_ttft_ms'], '.0f')} | "
                    f"{_fmt(s['mean_itl_ms'], '.0f')} | {_fmt(s['p99_itl_ms'], '.0f')} | {_fmt(s['accept_length'])} |")
    return "\n".join(rows)


def make_plots(report: dict, out_dir: Path) -> list[str]:
    """Write the PNGs; returns their file names (relative to out_dir)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    names = []
    workloads = list(dict.fromkeys(r["workload"] for r in results))
    batch_sizes = sorted({r["batch_size"] for r in results if r["batch_size"] > 0}) or [0]
    tree_methods = [m for m in ("jetspec", "bidirectional") if any(r["method"] == m for r in results)]

    if tree_methods:
        fig, axes = plt.subplots(1, len(workloads), figsize=(4.5 * len(workloads), 3.6), squeeze=False)
        for ax, w in zip(axes[0], workloads):
            for m in tree_methods:
                for bs in batch_sizes:
                    pts = sorted((r["budget"], r["speedup"]) for r in results
                                 if r["workload"] == w and r["batch_size"] == bs and r["method"] == m
                                 and r["speedup"] is not None and r["budget"] is not None)
                    if pts:
                        line = ax.plot(*zip(*pts), marker="o", linestyle="-" if m == "jetspec" else "--",
                                       label=f"{m} bs {bs}")[0]
                        auto = [r["speedup"] for r in results if r["workload"] == w and r["batch_size"] == bs
                                and r["label"] == f"{m}@auto" and r["speedup"] is not None]
                        if auto:  # the adaptive width as a star at the right edge
                            ax.plot([pts[-1][0] * 1.25], auto, marker="*", markersize=11,
                                    color=line.get_color(), linestyle="none")
            ax.axhline(1.0, color="grey", linewidth=0.8)
            ax.set_xscale("log", base=2)
            ax.set_title(w)
            ax.set_xlabel("node budget")
            ax.set_ylabel("speedup over ar")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "speedup_vs_budget.png", dpi=110)
        plt.close(fig)
        names.append("speedup_vs_budget.png")

    hist_rows = [r for r in results if r["accept_hist"] and r["batch_size"] == min(batch_sizes)]
    if hist_rows:
        fig, axes = plt.subplots(1, len(workloads), figsize=(4.5 * len(workloads), 3.6), squeeze=False)
        for ax, w in zip(axes[0], workloads):
            rows = [r for r in hist_rows if r["workload"] == w]
            # the largest budget of each method, and the chain
            pick = {}
            for r in rows:
                if r["method"] not in pick or (r["budget"] or 0) > (pick[r["method"]]["budget"] or 0):
                    pick[r["method"]] = r
            for r in pick.values():
                h = r["accept_hist"]
                total = max(sum(h), 1)
                last = max((i for i, v in enumerate(h) if v), default=1)
                ax.plot(range(1, last + 1), [h[i] / total for i in range(1, last + 1)], marker=".", label=r["label"])
            ax.set_title(f"{w}, batch {min(batch_sizes)}")
            ax.set_xlabel("tokens committed per round")
            ax.set_ylabel("fraction of rounds")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "accept_hist.png", dpi=110)
        plt.close(fig)
        names.append("accept_hist.png")

    timed = [r for r in results if r.get("ms_per_round") and r["batch_size"] == min(batch_sizes)
             and r["workload"] == workloads[0]]
    if timed:
        fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(timed), 3.6))
        bottom = [0.0] * len(timed)
        for p in PHASE_NAMES:
            vals = [r["ms_per_round"].get(p, 0.0) for r in timed]
            ax.bar(range(len(timed)), vals, bottom=bottom, label=p)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(timed)), [r["label"] for r in timed], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("ms per round")
        ax.set_title(f"round time, {workloads[0]}, batch {min(batch_sizes)}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "round_breakdown.png", dpi=110)
        plt.close(fig)
        names.append("round_breakdown.png")
    return names


def write_markdown(report: dict, out_dir: Path, command: str, plots: list[str]) -> Path:
    m, plan = report["machine"], report["plan"]
    lines = [
        "# JetSpec benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs ({m['processor']}), GPU: {m['gpu'] or 'none'}; "
        f"torch {m['torch']}, sglang {m['sglang']}; {m['date']}; whole run {report['seconds'] / 60:.1f} min.",
        "",
        f"Target `{plan['model']}`; heads {plan['heads'] or '-'}; greedy, at most {plan['max_new_tokens']} "
        f"new tokens; prompts per workload {plan['workloads']}; at least {plan['num_prompts']} prompts per "
        "measurement (more when the batch size is larger). Batch size = requests in flight (closed loop). "
        "Speedups are tokens/s ratios to `ar` measured in this same run on the same prompts. Accept length = "
        "tokens committed per verify round per request, bonus token included.",
        "",
        "## Fastest configuration per workload and batch size",
        "",
        best_table(report["results"]),
        "",
        "## All measurements",
        "",
        summary_table(report["results"]),
        "",
    ]
    if report.get("skipped"):
        lines += ["## Methods that did not run here", ""]
        lines += [f"- `{k}`: {v}" for k, v in report["skipped"].items()]
        lines += [""]
    moe = experts_table(report["results"])
    if moe:
        lines += ["## MoE target: experts activated per verify (expert-aware scheduling on; "
                  "`-noexpert` = off)", "", moe, ""]
    widths = widths_table(report["results"])
    if widths:
        lines += ["## Adaptive width: rounds per verify width (budget_policy.py)", "", widths, ""]
    pool = plan.get("max_total_tokens")
    lines += [f"## KV pool and radix cache (pool: {pool or 'default'} tokens)", "",
              "`jetspec@auto` reserves KV per step for the width it will verify; "
              "`jetspec@auto-maxreserve` (if measured) is the same server reserving the whole budget "
              "(SGLANG_JETSPEC_KV_RESERVE=max).", "", kv_table(report["results"]), ""]
    lines += ["## Time per round (ms; `other` = prefill, scheduling and HTTP)", "",
              breakdown_table(report["results"]), "", "## Serving load (sglang.bench_serving)", "",
              serving_table(report.get("serving", [])), ""]
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
