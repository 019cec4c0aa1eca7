"""The real SGLang server with JETSPEC and the SHIPPED trained head (models/) against the same
server without speculation, through every front door a user has:

- /generate: 16 held-out prompts x 128 tokens sent concurrently, budgets 8 and 32, radix cache
  on; then a repeated prompt (a radix hit), a stop string inside an answer, and a mixed batch.
- /v1/chat/completions (OpenAI API), concurrently.
- an SGLang frontend program (sgl.function with gen, fork, and a regex-constrained gen).
- `python -m sglang.bench_serving --backend sglang` reports the accept length.
- temperature 0.8: requests complete, and the sampled first four tokens follow the target's own
  joint distribution (chi-square against transformers' exact probabilities), under
  both host sampling rules (walk on the budget-8 server, rrs on the budget-32 one).
- return_logprob (with top logprobs): greedy equal to the plain server's; sampled, equal to the
  target's logprob of each committed token.
- frequency / presence / repetition penalties and min_new_tokens: equal to greedy decoding with
  the penalty applied token by token (one token a round).
- n=2, stop_token_ids, a JSON schema, logit_bias: identical.

Greedy outputs must be identical token for token. Three servers run on 127.0.0.1 (plain,
JETSPEC budget 8, JETSPEC budget 32) and are killed (process group) at the end. The budget-8
server drafts over the whole vocabulary (SGLANG_JETSPEC_DRAFT_VOCAB=off), builds plain best-first
trees (SGLANG_JETSPEC_PAIR_PRIOR=off) and samples by the walk rule, the budget-32 one drafts over
the head's draft vocabulary, shapes its trees with the head's n-gram prior and samples by rrs (all
defaults), so every check covers both draft paths, both tree builders and both sampling rules.
"""

import json
import subprocess
import shutil
import sys
import time

import pytest
import torch
from server_harness import ROOT, STARTUP_TIMEOUT_S, Server, run_all

pytestmark = pytest.mark.slow

NEW_TOKENS = 128
BUDGETS = (8, 32)
DRAFT_VOCAB = {8: "off", 32: "on"}
SAMPLING_RULE = {8: "walk", 32: "rrs"}
PAIR_PRIOR = {8: "off", 32: "on"}


def _prompts() -> list[str]:
    out = []
    for name, k in (("code", 6), ("math", 5), ("chat", 5)):
        with open(ROOT / "data" / "prompts" / f"{name}.heldout.jsonl") as f:
            out += [json.loads(line)["prompt"] for line in f][:k]
    return out


@pytest.fixture(scope="module")
def servers(smollm2_dir, tmp_path_factory):
    from sglang_jetspec.model_store import default_head_dir

    head = default_head_dir(smollm2_dir)
    assert head is not None, "the shipped head models/smollm2-135m-jetspec is missing"
    tmp = tmp_path_factory.mktemp("parity")
    common = ("--max-running-requests", "16", "--max-total-tokens", "8192")
    started = {}
    try:
        started["plain"] = Server(smollm2_dir, tmp / "plain.log", *common)
        for b in BUDGETS:
            started[b] = Server(smollm2_dir, tmp / f"jetspec{b}.log", *common,
                                "--speculative-algorithm", "JETSPEC", "--speculative-draft-model-path",
                                str(head), "--speculative-num-draft-tokens", str(b),
                                env={"SGLANG_JETSPEC_DRAFT_VOCAB": DRAFT_VOCAB[b],
                                     "SGLANG_JETSPEC_SAMPLING_RULE": SAMPLING_RULE[b],
                                     "SGLANG_JETSPEC_PAIR_PRIOR": PAIR_PRIOR[b]})
        deadline = time.time() + STARTUP_TIMEOUT_S
        for s in started.values():
            s.wait_ready(deadline)
        for b in BUDGETS:  # each server says which draft path it took
            want = "of 49152 tokens" if DRAFT_VOCAB[b] == "on" else "the target's full vocabulary"
            assert "JETSPEC draft vocabulary: " in started[b].tail(10**6) and want in started[b].tail(10**6), b
            assert f"JETSPEC sampled requests: {SAMPLING_RULE[b]} rule" in started[b].tail(10**6), b
            want = "bigrams" if PAIR_PRIOR[b] == "on" else "none (plain best-first trees)"
            assert "JETSPEC tree prior: " in started[b].tail(10**6) and want in started[b].tail(10**6), b
            if shutil.which("c++") or shutil.which("g++"):  # plain and prior trees alike: the C++ builder
                assert "trees built by the native builder" in started[b].tail(10**6), b
        yield started
        for s in started.values():  # nothing died or logged a traceback under all that load
            assert s.proc.poll() is None, s.tail()
    finally:
        for s in started.values():
            s.kill()


@pytest.fixture(scope="module")
def prompt_ids(smollm2_target):
    from sglang_jetspec.reference.prompts import encode_prompts

    return encode_prompts(smollm2_target.tokenizer, _prompts())


def _same(plain: list[dict], spec: list[dict], label: str) -> None:
    for i, (w, g) in enumerate(zip(plain, spec)):
        assert g["output_ids"] == w["output_ids"], (
            f"{label}, request {i}: first difference at token "
            f"{next(k for k, (a, b) in enumerate(zip(w['output_ids'] + [None], g['output_ids'] + [None])) if a != b)}")
        assert g["meta_info"]["finish_reason"] == w["meta_info"]["finish_reason"], (label, i)


def test_generate_16_concurrent_prompts_identical(servers, prompt_ids):
    items = [(ids, NEW_TOKENS) for ids in prompt_ids]
    want = run_all(servers["plain"].generate, items)
    assert all(len(w["output_ids"]) > 0 for w in want)
    for b in BUDGETS:
        got = run_all(servers[b].generate, items)
        _same(want, got, f"budget {b}")
        rounds = sum(g["meta_info"]["spec_verify_ct"] for g in got)
        tokens = sum(len(g["output_ids"]) - 1 for g in got)  # the first token comes from prefill
        print(f"budget {b}: {tokens} tokens in {rounds} verify rounds = {tokens / rounds:.2f} per round")
        assert tokens / rounds > 1.0, "the trained head should commit more than one token per round"

    # second wave: a repeated prompt (radix hit), a stop string inside an answer, a fresh prompt
    stop_src = want[1]
    text = stop_src["text"]
    stop = text[len(text) // 2: len(text) // 2 + 6]
    assert stop.strip(), f"no usable stop string in {text!r}"
    wave = [(prompt_ids[0], NEW_TOKENS, 0.0), (prompt_ids[1], NEW_TOKENS, 0.0, {"stop": [stop]}),
            (prompt_ids[2] + prompt_ids[3], 40, 0.0)]
    call = lambda s: (lambda ids, n, t, extra={}: s.generate(ids, n, t, **extra))
    want2 = run_all(call(servers["plain"]), wave)
    assert want2[1]["meta_info"]["finish_reason"]["type"] == "stop", want2[1]["meta_info"]
    assert len(want2[1]["output_ids"]) < len(stop_src["output_ids"])
    for b in BUDGETS:
        got2 = run_all(call(servers[b]), wave)
        _same(want2, got2, f"budget {b}, second wave")
        assert got2[0]["meta_info"]["cached_tokens"] >= len(prompt_ids[0]) - 1, "repeated prompt missed the radix cache"
        assert got2[0]["output_ids"] == want[0]["output_ids"]
        assert got2[1]["text"] == want2[1]["text"] and stop not in got2[1]["text"]


def test_openai_chat_completions_identical(servers):
    prompts = _prompts()[::4]
    def chat(server):
        return lambda p: server.post("/v1/chat/completions", {
            "model": "default", "messages": [{"role": "user", "content": p}],
            "temperature": 0, "max_tokens": 64})
    want = run_all(chat(servers["plain"]), [(p,) for p in prompts])
    for b in BUDGETS:
        got = run_all(chat(servers[b]), [(p,) for p in prompts])
        for w, g in zip(want, got):
            assert g["choices"][0]["message"]["content"] == w["choices"][0]["message"]["content"]
            assert g["choices"][0]["finish_reason"] == w["choices"][0]["finish_reason"]
            assert g["usage"]["completion_tokens"] == w["usage"]["completion_tokens"]


def test_frontend_program_with_fork_and_regex_identical(servers):
    import sglang as sgl

    @sgl.function
    def program(s, question):
        s += "Question: " + question + "\nAnswer:"
        s += sgl.gen("answer", max_tokens=32, temperature=0, stop="\n")
        forks = s.fork(2)
        for i, f in enumerate(forks):
            f += f"\nIdea {i + 1}:" + sgl.gen("idea", max_tokens=16, temperature=0)
        s += "\nThe answer as a number: " + sgl.gen("number", regex=r"[0-9]{1,4}", max_tokens=8, temperature=0)
        s += "\n" + "".join(f["idea"] for f in forks)

    def run(server):
        backend = sgl.RuntimeEndpoint(server.url(""))
        out = []
        for q in ("What is 12 plus 30?", "How many legs do three cats have?"):
            st = program.run(question=q, backend=backend)
            out.append((st["answer"], st["number"], st.text()))
        return out

    want = run(servers["plain"])
    for _, number, _ in want:
        assert number.isdigit(), f"regex-constrained gen returned {number!r}"
    assert run(servers[32]) == want


def test_bench_serving_reports_accept_length(servers, smollm2_dir, tmp_path):
    data = tmp_path / "conversations.jsonl"
    with open(data, "w") as f:
        for p in _prompts()[:6]:
            f.write(json.dumps({"conversations": [{"content": p}, {"content": "x " * 40}]}) + "\n")
    cmd = [sys.executable, "-m", "sglang.bench_serving", "--backend", "sglang",
           "--base-url", servers[32].url(""), "--dataset-name", "custom", "--dataset-path", str(data),
           "--num-prompts", "6", "--sharegpt-output-len", "32", "--tokenizer", str(smollm2_dir),
           "--disable-tqdm", "--output-file", str(tmp_path / "bench.jsonl")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next((ln for ln in proc.stdout.splitlines() if "Accept length" in ln), None)
    assert line is not None, proc.stdout[-3000:]
    assert float(line.split(":")[-1]) > 1.0, line


def test_n_stop_ids_json_schema_and_logit_bias_identical(servers, prompt_ids):
    """Request options a user combines with speculation: parallel samples (n=2, greedy: both the
    same), stop_token_ids, a JSON schema, logit_bias; each must give the plain server's tokens,
    and each option must matter on the plain server (else the check proves nothing)."""
    schema = json.dumps({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
    free = servers["plain"].generate(prompt_ids[2], 60)["output_ids"]
    stop_tok = free[len(free) // 2]  # a token the free answer emits mid-way
    cases = [(prompt_ids[0], {"n": 2}), (prompt_ids[2], {"stop_token_ids": [stop_tok]}),
             (prompt_ids[4], {"json_schema": schema}),
             (prompt_ids[5], {"logit_bias": {str(free[1]): -100.0}})]
    call = lambda srv: (lambda ids, extra: srv.generate(ids, 60, 0.0, **extra))
    want = run_all(call(servers["plain"]), cases)
    ids_of = lambda r: [x["output_ids"] for x in r] if isinstance(r, list) else r["output_ids"]
    assert isinstance(want[0], list) and len(want[0]) == 2
    assert len(want[1]["output_ids"]) < len(free) and want[1]["output_ids"][-1] == stop_tok
    assert want[2]["text"].lstrip().startswith("{")
    for (ids, extra), w in zip(cases[2:], want[2:]):
        assert w["output_ids"] != servers["plain"].generate(ids, 60)["output_ids"], f"{list(extra)} changed nothing"
    for b in BUDGETS:
        got = run_all(call(servers[b]), cases)
        for (ids, extra), w, g in zip(cases, want, got):
            assert ids_of(g) == ids_of(w), (b, list(extra))


def _logprob_request(server, ids, n, temperature, start, top=0):
    return server.post("/generate", {"input_ids": ids, "return_logprob": True, "logprob_start_len": start,
                                     "top_logprobs_num": top,
                                     "sampling_params": {"temperature": temperature, "max_new_tokens": n}})


def test_logprobs_equal_the_plain_servers(servers, prompt_ids):
    """return_logprob through JETSPEC: each committed token's logprob (and top-3) comes from the
    verify row of that token's own tree node, so it must equal what the plain server reports
    (greedy, side by side); and with sampling (temperature 1: raw log-softmax either way) each
    reported logprob must be the target's for that token after that prefix, read back as the plain
    server's input logprobs of prompt + answer. A wrong accept-index row shows up as a mismatch."""
    tol = 2e-3  # fp32 tree verify vs sequential decode differ by ~1e-5 on SmolLM2 logits
    prompts = prompt_ids[::4]
    want = run_all(lambda ids: _logprob_request(servers["plain"], ids, 24, 0.0, len(ids) - 3, top=3),
                   [(ids,) for ids in prompts])
    for b in BUDGETS:
        got = run_all(lambda ids: _logprob_request(servers[b], ids, 24, 0.0, len(ids) - 3, top=3),
                      [(ids,) for ids in prompts])
        _same(want, got, f"budget {b}, logprobs")
        for w, g in zip(want, got):
            wm, gm = w["meta_info"], g["meta_info"]
            assert gm["spec_verify_ct"] > 0 and len(gm["output_token_logprobs"]) == len(g["output_ids"])
            for key in ("input_token_logprobs", "output_token_logprobs"):
                assert [t[1] for t in gm[key]] == [t[1] for t in wm[key]], key
                for (lw, _, _), (lg, _, _) in zip(wm[key], gm[key]):
                    assert (lw is None) == (lg is None) and (lw is None or abs(lw - lg) < tol), (key, lw, lg)
            for wt, gt in zip(wm["output_top_logprobs"], gm["output_top_logprobs"]):
                assert all(abs(x[0] - y[0]) < tol for x, y in zip(wt, gt)), (wt, gt)
                for r, (x, y) in enumerate(zip(wt, gt)):  # the same ids, unless two ranks nearly tie
                    tie = any(abs(x[0] - z[0]) < tol for z in wt[:r] + wt[r + 1:])
                    assert x[1] == y[1] or tie, (wt, gt)

    sampled = run_all(lambda ids: _logprob_request(servers[32], ids, 32, 1.0, len(ids) - 1),
                      [(ids,) for ids in prompts])
    for ids, g in zip(prompts, sampled):
        out, lps = g["output_ids"], g["meta_info"]["output_token_logprobs"]
        assert g["meta_info"]["spec_verify_ct"] > 0 and [t[1] for t in lps] == out
        check = _logprob_request(servers["plain"], ids + out, 1, 0.0, len(ids) - 1)
        exact = check["meta_info"]["input_token_logprobs"][-len(out):]
        assert [t[1] for t in exact] == out
        for k, ((lw, _, _), (lg, _, _)) in enumerate(zip(exact, lps)):
            assert abs(lw - lg) < tol, (k, lw, lg)


def test_penalties_and_min_new_tokens_are_exact(servers, prompt_ids, smollm2_target):
    """SGLang applies penalties and the min_new_tokens stop mask to a whole verify round from the
    state at its start ("relaxed"); JETSPEC decodes such requests one token a round
    (request_settings.needs_plain_step), so each equals greedy decoding with the penalty applied
    token by token (tests/penalty_reference.py, transformers), and an unpenalised request in the
    same batches keeps speculating. Each penalty must change the output (else nothing is
    proved). The default plain server is not the reference here: its overlap scheduler lags the
    penalty state by a token (docs/sglang-integration.md)."""
    from penalty_reference import Penalties, greedy_with_penalties, near_tie_or_equal

    from sglang_jetspec.reference.parity import DEFAULT_TIE_TOL

    n = 48
    model, stop_ids = smollm2_target.model, smollm2_target.eos_token_ids()
    base = run_all(lambda ids: servers["plain"].generate(ids, 128), [(ids,) for ids in prompt_ids])
    short = [(ids, b) for ids, b in zip(prompt_ids, base)
             if b["meta_info"]["finish_reason"]["type"] == "stop" and len(b["output_ids"]) < 100]
    assert short, "no held-out prompt ends with EOS within 100 tokens: min_new_tokens went untested"
    ids_eos, b_eos = short[0]
    k = len(b_eos["output_ids"])
    cases = [(prompt_ids[3], n, {"frequency_penalty": 1.0}, Penalties(frequency=1.0)),
             (prompt_ids[6], n, {"presence_penalty": 1.5}, Penalties(presence=1.5)),
             (prompt_ids[9], n, {"repetition_penalty": 1.4}, Penalties(repetition=1.4)),
             (ids_eos, k + 20, {"min_new_tokens": k + 8}, Penalties(min_new_tokens=k + 8))]
    want = []
    for ids, m, extra, pen in cases:
        ref, tops = greedy_with_penalties(model, ids, m, pen, stop_ids)
        free, _ = greedy_with_penalties(model, ids, m, Penalties(), stop_ids)
        assert ref != free, f"{extra} did not change the greedy output"
        want.append((ref, tops))
    assert len(want[3][0]) > k, "min_new_tokens did not hold EOS back"
    items = [(ids, m, 0.0, extra) for ids, m, extra, _ in cases] + [(prompt_ids[0], n, 0.0, {})]
    call = lambda srv: (lambda ids, m, t, extra: srv.generate(ids, m, t, **extra))
    for b in BUDGETS:
        got = run_all(call(servers[b]), items)
        for (_, _, extra, _), (w, tops), g in zip(cases, want, got):
            tie = near_tie_or_equal(w, g["output_ids"], tops, DEFAULT_TIE_TOL)
            if tie:
                print(f"budget {b} {extra}: {tie}")
            # one token a round (until min_new_tokens, then speculation again)
            # (token 0 comes from the prefill, tokens 1 .. min_new_tokens - 1 one a round)
            plain_rounds = min(extra.get("min_new_tokens", 10**6) - 1, len(g["output_ids"]) - 1)
            assert g["meta_info"]["spec_verify_ct"] >= plain_rounds, (b, extra)
            if "min_new_tokens" not in extra:
                assert g["meta_info"]["spec_verify_ct"] == len(g["output_ids"]) - 1, (b, extra)
        free = got[-1]
        assert free["meta_info"]["spec_verify_ct"] < len(free["output_ids"]) - 1, "the unpenalised request stopped speculating"


@pytest.mark.parametrize("budget", BUDGETS)
def test_sampling_follows_the_target_distribution(servers, smollm2_target, budget):
    """Temperature 0.8, four tokens per request (EOS ignored): token 1 comes from the prefill, tokens 2-4 from
    JETSPEC verify rounds (trees drafted by the trained head, at most 2 deep with 3 tokens left,
    so a round that accepts a child goes on to that child's own sibling group). The joint
    frequencies of the 4-tuples over 400 requests must match transformers' exact probabilities
    at temperature 0.8 (chi-square, alpha 1e-3; bins under 5 expected pooled), for the walk rule
    (budget 8) and for rrs on redrawn trees (budget 32)."""
    from pair_law import assert_pairs_follow, exact_sequence_law

    temp, n = 0.8, 400
    from sglang_jetspec.reference.prompts import encode_prompts

    # a prompt whose 4-token law is concentrated enough for 400 samples (8 outcomes expect >= 5)
    ids = encode_prompts(smollm2_target.tokenizer, ["What is 2 + 2?"])[0]
    server = servers[budget]
    outs = []  # ignore_eos: a short answer ("Blue.") must not end the 4-tuple; EOS is a token
    for k in range(0, n, 16):
        outs += run_all(lambda: server.generate(ids, 4, temp, ignore_eos=True), [()] * 16)
    tuples = [tuple(o["output_ids"][:4]) for o in outs]
    assert all(len(t) == 4 for t in tuples), "a sampled request ended early"
    verify = sum(o["meta_info"]["spec_verify_ct"] for o in outs)
    assert n <= verify < 3 * n, verify  # up to three rounds a request; fewer when drafts were taken
    print(f"budget {budget}: {3 * n / verify:.2f} tokens a round")
    probs = exact_sequence_law(smollm2_target.model, ids, lambda logits: torch.softmax(logits / temp, -1), 4,
                               top=8)
    assert_pairs_follow(tuples, probs, f"temperature 0.8 sampling, {SAMPLING_RULE[budget]} rule")


def test_rounds_match_the_reference_decoder(servers, prompt_ids, smollm2_target):
    """The server and the transformers reference decoder, same shipped head (both drafting over
    its draft vocabulary), budget 32, greedy fp32: the same tokens AND the same number of verify
    rounds per request (the same drafts were accepted). Both sides run different kernels, so a round may legitimately differ at an fp32
    near-tie of the target's top-2 logits; check_parity reports such a tie, anything else fails."""
    from sglang_jetspec.core.checkpoint import load_head
    from sglang_jetspec.model_store import default_head_dir
    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
    from sglang_jetspec.reference.parity import check_parity

    head = load_head(str(default_head_dir(smollm2_target.model_dir)))
    decoder = ReferenceDecoder(smollm2_target, head, TreeSettings(budget=32, width=7))
    picked = prompt_ids[:2]
    got = run_all(servers[32].generate, [(ids, 40) for ids in picked])
    problems = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the idle servers' schedulers poll on both cores: more threads thrash
    try:
        refs = [decoder.generate(ids, 40) for ids in picked]
    finally:
        torch.set_num_threads(threads)
    for ids, g, ref in zip(picked, got, refs):
        if g["output_ids"] != ref.output_ids:
            rep = check_parity(smollm2_target.model, ids, ref.output_ids, g["output_ids"])
            if not rep.near_tie:
                problems.append(f"tokens differ beyond a near-tie: {rep}")
            print(f"near-tie: {rep}")
            continue
        if g["meta_info"]["spec_verify_ct"] != ref.rounds:
            problems.append(f"rounds {g['meta_info']['spec_verify_ct']} (server) vs {ref.rounds} (reference), "
                            f"reference per-round {ref.accepted}")
    assert not problems, problems
