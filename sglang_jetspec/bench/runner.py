"""One measurement: a configuration, a workload and a batch size, on a running SGLang server.

Batch size = requests in flight at once (closed loop: a client thread sends its next prompt when
its previous answer arrives), so SGLang's continuous batching sees that many running requests.
Greedy, ignore_eos off: every method must produce exactly `ar`'s tokens.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from sglang_jetspec.bench.methods import HEAD_SERVERS, Config
from sglang_jetspec.integration.round_stats import stats_delta


@dataclass
class Measurement:
    label: str
    method: str
    budget: int | None
    workload: str
    batch_size: int
    requests: int
    output_tokens: int
    wall_s: float
    tokens_per_s: float
    verify_rounds: int              # per request, summed (SGLang's spec_verify_ct)
    accept_length: float            # tokens committed per verify round per request, bonus included
    accept_hist: list[int] = field(default_factory=list)   # JETSPEC servers: requests-rounds by length
    nodes_per_request: float | None = None
    ms_per_round: dict | None = None  # draft / tree / verify / accept / other (prefill, scheduling, HTTP)
    outputs: list[list[int]] = field(default_factory=list)
    speedup: float | None = None     # tokens/s over ar's, same workload and batch size, same run
    matches_ar: int | None = None    # requests whose tokens equal ar's
    phases: list[int] | None = None  # mixed load: the concurrency of each phase (batch_size 0)
    retracted: int | None = None     # requests SGLang retracted for lack of KV (server log)
    prefill_tokens: int | None = None   # prompt tokens prefilled (server log: #new-token)
    cached_tokens: int | None = None    # prompt tokens found in the radix cache (#cached-token)
    experts: dict | None = None      # MoE targets: expert-aware scheduling counters (expert_delta)
    widths: dict | None = None       # adaptive width: rounds per verify width (and curve probes)
    policy: dict | None = None       # adaptive width: the policy's view at the end (policy_view)
    server_rounds: int | None = None  # verify forwards of the server (JETSPEC servers)
    repeats: int = 1                 # measurements merged into this one (merge_repeats)

    def to_json(self) -> dict:
        return asdict(self)


def jetspec_counters(server) -> dict | None:
    """The JETSPEC worker's cumulative round counters from /get_server_info, or None."""
    info = server.get_json("/get_server_info")
    states = info.get("internal_states") or [{}]
    return states[0].get("jetspec")


def flush_cache(server, timeout_s: float = 30.0) -> None:
    """Empty the server's radix cache (and NGRAM's corpus) so every configuration starts cold:
    otherwise the first one measured pays the prefills the later ones find cached, and NGRAM
    would draft from its own answers to the same prompts a moment earlier. Retried while
    requests are still leaving (SGLang refuses to flush a busy server)."""
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(server.url + "/flush_cache", b"", method="POST"),
                                   timeout=60).read()
            return
        except urllib.error.HTTPError as e:
            if time.time() > deadline:
                raise RuntimeError(f"/flush_cache refused for {timeout_s:.0f}s: {e.read()[:200]!r}") from e
            time.sleep(0.5)


def _request_body(ids: list[int], config: Config, max_new_tokens: int) -> dict:
    sampling = {"temperature": 0.0, "max_new_tokens": max_new_tokens}
    custom = config.custom_params()
    if custom is not None:
        sampling["custom_params"] = custom
    return {"input_ids": list(ids), "sampling_params": sampling}


def measure(server, config: Config, workload: str, prompts: list[list[int]], batch_size: int,
            max_new_tokens: int, phases: list[int] | None = None) -> Measurement:
    """Send every prompt with `batch_size` in flight; count tokens, rounds and time. With
    `phases` (a mixed load), the prompts are sent in len(phases) consecutive parts, part k with
    phases[k] requests in flight, and the measurement covers all of them (batch_size 0)."""
    if not prompts:
        raise ValueError(f"workload {workload!r} has no prompts to send")
    flush_cache(server)
    before = jetspec_counters(server) if config.server in HEAD_SERVERS else None
    log_at = _log_size(server)
    parts = [(batch_size, prompts)] if not phases else _split(prompts, phases)
    t0 = time.perf_counter()
    replies = []
    for bs, part in parts:
        with ThreadPoolExecutor(bs) as pool:
            replies += list(pool.map(lambda ids: server.post("/generate", _request_body(ids, config, max_new_tokens)),
                                     part))
    wall = time.perf_counter() - t0
    outputs = [list(r["output_ids"]) for r in replies]
    tokens = sum(len(o) for o in outputs)
    rounds = sum(int(r["meta_info"].get("spec_verify_ct", 0) or 0) for r in replies)
    # the first token of each request comes from its prefill, every later one from a verify round
    committed = sum(max(len(o) - 1, 0) for o in outputs)
    m = Measurement(label=config.label, method=config.method, budget=config.budget, workload=workload,
                    batch_size=0 if phases else batch_size, requests=len(prompts), phases=phases,
                    output_tokens=tokens, wall_s=wall, tokens_per_s=tokens / wall, verify_rounds=rounds,
                    accept_length=committed / rounds if rounds else 1.0, outputs=outputs)
    if log_at is not None:
        m.retracted, m.prefill_tokens, m.cached_tokens = log_counts(_log_since(server, log_at))
    if before is not None:
        after = jetspec_counters(server)
        d = stats_delta(before, after)
        m.accept_length = d["accept_length"] if d["request_rounds"] else m.accept_length
        m.accept_hist = d["accept_hist"]
        m.nodes_per_request = d["nodes_per_request"]
        m.widths = width_delta(before.get("budget"), after.get("budget"))
        m.policy = policy_view(after.get("budget"))
        if before.get("experts") and after.get("experts"):
            m.experts = expert_delta(before["experts"], after["experts"])
        m.server_rounds = d["rounds"]
        if d["timed"] and d["rounds"]:
            ms = dict(d["ms_per_round"])
            ms["other"] = max(0.0, 1000 * wall / d["rounds"] - sum(ms.values()))
            m.ms_per_round = ms
    return m


def merge_repeats(parts: list[Measurement]) -> Measurement:
    """One measurement of a configuration from its repeats (interleaved with the other
    configurations' in the same run, so a slow minute of a shared machine falls on all of them):
    tokens and wall time summed (tokens/s = total tokens / total time), outputs concatenated in
    order (compared with ar's repeats one to one), rates averaged by their weights (accept
    length and nodes per request by request-rounds, ms per round by server rounds)."""
    if not parts:
        raise ValueError("merge_repeats needs at least one measurement")
    first = parts[0]
    if len(parts) == 1:
        return first
    if len({(p.label, p.workload, p.batch_size) for p in parts}) != 1:
        raise ValueError("merge_repeats: the repeats must be of one configuration, workload and batch size")
    tokens, wall = sum(p.output_tokens for p in parts), sum(p.wall_s for p in parts)
    rounds = sum(p.verify_rounds for p in parts)

    def mean(values, weights):
        total = sum(weights)
        return None if any(v is None for v in values) or not total else \
            sum(v * w for v, w in zip(values, weights)) / total

    def total(values):
        return None if any(v is None for v in values) else sum(values)

    rr = [p.verify_rounds for p in parts]
    m = Measurement(label=first.label, method=first.method, budget=first.budget, workload=first.workload,
                    batch_size=first.batch_size, phases=first.phases, requests=sum(p.requests for p in parts),
                    output_tokens=tokens, wall_s=wall, tokens_per_s=tokens / wall, verify_rounds=rounds,
                    accept_length=mean([p.accept_length for p in parts], rr) if rounds else first.accept_length,
                    outputs=[o for p in parts for o in p.outputs], repeats=len(parts))
    if all(p.accept_hist for p in parts):
        m.accept_hist = [sum(col) for col in zip(*(p.accept_hist for p in parts))]
    m.nodes_per_request = mean([p.nodes_per_request for p in parts], rr)
    m.server_rounds = total([p.server_rounds for p in parts])
    if all(p.ms_per_round for p in parts) and m.server_rounds:
        sr = [p.server_rounds for p in parts]
        m.ms_per_round = {k: mean([p.ms_per_round[k] for p in parts], sr) for k in first.ms_per_round}
    m.retracted = total([p.retracted for p in parts])
    m.prefill_tokens = total([p.prefill_tokens for p in parts])
    m.cached_tokens = total([p.cached_tokens for p in parts])
    if all(p.widths is not None for p in parts):
        m.widths = {}
        for p in parts:
            for k, v in p.widths.items():
                m.widths[k] = m.widths.get(k, 0) + v
        m.widths = dict(sorted(m.widths.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else 0)))
    m.policy = parts[-1].policy  # the view after the last repeat
    if all(p.experts and p.experts.get("rounds") for p in parts):
        er = [p.experts["rounds"] for p in parts]
        m.experts = dict(parts[-1].experts, rounds=sum(er))  # recall/precision: cumulative, the last
        for k in ("mean_distinct_per_verify", "verify_ms_per_round", "kept_share"):
            m.experts[k] = mean([p.experts.get(k) for p in parts], er)
        m.experts["gated_rounds"] = sum(p.experts.get("gated_rounds", 0) for p in parts)
    return m


POLICY_VIEW = ("measured_ms", "expected_tokens_curve", "bias_ratio", "own_ms_per_round")


def policy_view(snapshot: dict | None) -> dict | None:
    """What the adaptive width believed at the end of a measurement: the measured step time per
    "batch x width" ([ms, rounds]), the expected tokens per request at each width, the bias
    correction and its own time per round. None for static widths."""
    if not snapshot or snapshot.get("mode") != "adaptive":
        return None
    return {k: snapshot[k] for k in POLICY_VIEW if k in snapshot}


def width_delta(before: dict | None, after: dict | None) -> dict | None:
    """Rounds per verify width between two budget-policy snapshots, plus the curve probes and
    close calls among them; None for static widths."""
    if not before or not after or after.get("mode") != "adaptive":
        return None
    b, a = before.get("width_hist", {}), after.get("width_hist", {})
    out = {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}
    out = dict(sorted(out.items(), key=lambda kv: int(kv[0])))
    for key in ("probes", "close_calls"):
        if key in after:
            out[key] = after[key] - before.get(key, 0)
    return out


def expert_delta(before: dict, after: dict) -> dict:
    """What the expert-aware scheduler saw between two snapshots (expert_schedule.py): mean
    distinct experts per layer and verify, verify ms per round, kept / candidate nodes, and the
    prediction's per-layer recall and precision (cumulative: the predictor keeps learning), and
    the held loss bound at the end."""
    rounds = after["rounds"] - before["rounds"]
    if rounds <= 0:
        return {"rounds": 0}
    layers = len(after["distinct_per_layer_sum"])
    distinct = sum(after["distinct_per_layer_sum"]) - sum(before["distinct_per_layer_sum"])
    cand = after["candidate_nodes"] - before["candidate_nodes"]
    return {"rounds": rounds, "prune": after["prune"],
            "mean_distinct_per_verify": distinct / (rounds * layers),
            "verify_ms_per_round": 1000 * (after["verify_seconds"] - before["verify_seconds"]) / rounds,
            "kept_share": (after["kept_nodes"] - before["kept_nodes"]) / cand if cand else None,
            "gated_rounds": after.get("gated_rounds", 0) - before.get("gated_rounds", 0),
            # the held bound on the expected tokens at the end (core/loss_bound.py), if held
            "loss_bound": _held_bound(before.get("held") or {}, after.get("held") or {}),
            "recall_per_layer": after["recall_per_layer"], "precision_per_layer": after["precision_per_layer"]}


def _held_bound(before: dict, after: dict) -> float | None:
    """The held bound at the end of a measurement: with one bound per tree width, that of the width
    most of the measurement's observed rounds had."""
    by_a, by_b = after.get("by_width") or {}, before.get("by_width") or {}
    if not by_a:
        return after.get("bound")

    def seen(snap: dict | None) -> int:
        return (snap or {}).get("labelled", 0) + (snap or {}).get("probes", 0)
    width = max(by_a, key=lambda w: seen(by_a[w]) - seen(by_b.get(w)))
    return by_a[width]["bound"]


_RETRACT = re.compile(r"#retracted_reqs: (\d+)")
_PREFILL = re.compile(r"#new-token: (\d+), #cached-token: (\d+)")


def log_counts(text: str) -> tuple[int, int, int]:
    """(requests retracted, prompt tokens prefilled, prompt tokens served from the radix cache)
    from SGLang's scheduler log lines ("KV cache pool is full. Retract requests.
    #retracted_reqs: N", "Prefill batch ... #new-token: N, #cached-token: M")."""
    retracted = sum(int(x) for x in _RETRACT.findall(text))
    pre = _PREFILL.findall(text)
    return retracted, sum(int(a) for a, _ in pre), sum(int(b) for _, b in pre)


def _log_size(server) -> int | None:
    path = getattr(server, "log_path", None)
    try:
        return path.stat().st_size if path is not None else None
    except OSError:
        return None


def _log_since(server, offset: int, settle_s: float = 0.5) -> str:
    time.sleep(settle_s)  # SGLang logs a prefill after streaming its reply
    with open(server.log_path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def _split(prompts: list, phases: list[int]) -> list[tuple[int, list]]:
    """Consecutive parts of the prompts, each with enough prompts to keep its concurrency busy
    (proportional to the phase's concurrency)."""
    total = sum(phases)
    out, start = [], 0
    for k, c in enumerate(phases):
        n = len(prompts) - start if k == len(phases) - 1 else max(c, round(len(prompts) * c / total))
        out.append((c, prompts[start:start + n]))
        start += n
    if any(not part for _, part in out):
        raise ValueError(f"{len(prompts)} prompts are too few for the mixed load {phases}")
    return out


def compare_to_ar(results: list[Measurement]) -> None:
    """Fill speedup and matches_ar from the ar measurement of the same workload and batch size."""
    base = {(m.workload, m.batch_size): m for m in results if m.label == "ar"}  # not ar-onednn
    for m in results:
        ar = base.get((m.workload, m.batch_size))
        if ar is None:
            continue
        m.speedup = m.tokens_per_s / ar.tokens_per_s
        m.matches_ar = sum(a == b for a, b in zip(ar.outputs, m.outputs))
