"""End to end: the REAL SGLang server with --speculative-algorithm JETSPEC on CPU produces
exactly the tokens of the same server without speculation (greedy), and drafts exactly as the
reference decoder (reference/decoder.py, on transformers) does, n-gram prior included: the head
folder holds a pair_prior.safetensors counted from the target's continuations of every prompt, and
the fixture checks that the prior changes the reference's rounds somewhere (else matching them
could not show that the server applied it).

The head is OVERFIT here on the target's own greedy continuations of four prompts (about a
minute of training on CPU), so on those prompts it accepts several tokens per round: the
accepted-path KV compaction and the head's context bookkeeping run for real. On other prompts
it is as weak as a random head. Two servers (plain and JETSPEC, budget 8) run on 127.0.0.1 and
are always killed (process group) at the end.
"""

import time

import pytest
import torch
from server_harness import STARTUP_TIMEOUT_S, Server, run_all

pytestmark = pytest.mark.slow

TRAINED = ["The capital of France is", "def fibonacci(n):",
           "Once upon a time, in a small village,", "List three colors: 1."]
UNTRAINED = [("Water boils at", 1), ("The opposite of hot is", 3), ("My favourite fruit is", 32)]
NEW_TOKENS = 32
BUDGET, WIDTH, BLOCK = 8, 7, 8  # depth defaults to block_size - 1 = 7


def _overfit_head(target, sequences: list[list[int]], steps: int = 80):
    """A head that memorised `sequences` (JetSpec block objective, loss over the tokens that
    occur in them only, to stay fast on CPU). A test fixture, not a trainer."""
    from sglang_jetspec.core.head import DraftHead, block_positions, build_block_attn_mask
    from sglang_jetspec.core.head_config import HeadConfig

    cfg = HeadConfig.for_target(target.hidden_size, target.num_layers, target.vocab_size,
                                num_layers=1, mask_token_id=16, block_size=BLOCK)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and polite to the servers starting next to us
    torch.manual_seed(0)
    head = DraftHead(cfg)
    emb = target.model.get_input_embeddings().weight.detach()
    vocab = torch.unique(torch.cat([torch.tensor(s) for s in sequences]))
    remap = torch.full((target.vocab_size,), -1)
    remap[vocab] = torch.arange(len(vocab))
    w_out = target.model.get_output_embeddings().weight.detach()[vocab]
    data = []
    for seq in sequences:
        toks = torch.tensor(seq)
        feats = target.forward(toks, target.new_cache(), 0, layer_ids=cfg.target_layer_ids).features
        data.append((toks, feats))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    for _ in range(steps):
        for toks, feats in data:
            t = len(toks)
            anchors = torch.arange(1, t - 1)
            block = torch.full((len(anchors), BLOCK), cfg.mask_token_id)
            block[:, 0] = toks[anchors]
            h = head(emb[block.flatten()][None], block_positions(anchors, BLOCK)[None],
                     head.project_context(feats[None]), torch.arange(t)[None],
                     attn_mask=build_block_attn_mask(t, anchors, BLOCK)[None])[0]
            goal = anchors[:, None] + torch.arange(1, BLOCK)  # slot i predicts anchor + i
            ok = goal < t
            logits = h.view(len(anchors), BLOCK, -1)[:, 1:][ok] @ w_out.T
            loss = torch.nn.functional.cross_entropy(logits, remap[toks[goal.clamp(max=t - 1)][ok]])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    return head.eval()


@pytest.fixture(scope="module")
def setup(smollm2_dir, smollm2_target, tmp_path_factory):
    """(plain server, JETSPEC server, prompt ids, reference results, reference rounds without the prior)."""
    from sglang_jetspec.core.checkpoint import save_head
    from sglang_jetspec.core.pair_prior import PairPrior
    from sglang_jetspec.reference.ar import generate_ar
    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings

    tmp = tmp_path_factory.mktemp("e2e")
    target = smollm2_target
    started = []
    try:
        plain = Server(smollm2_dir, tmp / "plain.log")
        started.append(plain)
        ids = {p: target.tokenizer(p)["input_ids"] for p in TRAINED + [u for u, _ in UNTRAINED]}
        new = {**{p: NEW_TOKENS for p in TRAINED}, **dict(UNTRAINED)}
        continuations = {p: generate_ar(target, ids[p], n).output_ids for p, n in new.items()}
        head = _overfit_head(target, [ids[p] + continuations[p] for p in TRAINED])
        save_head(head, str(tmp / "head"))
        prior = PairPrior.from_sequences([ids[p] + c for p, c in continuations.items()], target.vocab_size)
        prior.save(str(tmp / "head"))
        spec = Server(smollm2_dir, tmp / "jetspec.log", "--speculative-algorithm", "JETSPEC",
                      "--speculative-draft-model-path", str(tmp / "head"),
                      "--speculative-num-draft-tokens", str(BUDGET),
                      "--speculative-eagle-topk", str(WIDTH), "--enable-metrics")
        started.append(spec)
        head.pair_prior = prior  # as load_head would attach it from the folder
        decoder = ReferenceDecoder(target, head, TreeSettings(budget=BUDGET, width=WIDTH))
        reference = {p: decoder.generate(ids[p], n) for p, n in new.items()}
        head.pair_prior = None
        plain_trees = ReferenceDecoder(target, head, TreeSettings(budget=BUDGET, width=WIDTH))
        rounds_without = {p: plain_trees.generate(ids[p], n).rounds for p, n in new.items()}
        assert any(reference[p].rounds != r for p, r in rounds_without.items()), \
            "the prior changed no round here: the server's rounds could not show it applied the prior"
        deadline = time.time() + STARTUP_TIMEOUT_S
        plain.wait_ready(deadline)
        spec.wait_ready(deadline)
        time.sleep(2)
        spec.mark()
        yield plain, spec, ids, reference, rounds_without
    finally:
        for s in started:
            s.kill()


def _run_all(server: Server, items) -> list[dict]:
    return run_all(server.generate, items)  # concurrent: the JETSPEC batch has several rows


def test_greedy_outputs_equal_the_plain_server_and_rounds_the_reference(setup):
    plain, spec, ids, reference, rounds_without = setup
    prompts = TRAINED + [p for p, _ in UNTRAINED]
    items = [(ids[p], NEW_TOKENS) for p in TRAINED] + [(ids[p], n) for p, n in UNTRAINED]
    want = _run_all(plain, items)
    got = _run_all(spec, items)
    for (prompt_ids, _), w, g in zip(items, want, got):
        assert g["output_ids"] == w["output_ids"], (prompt_ids, w["output_ids"], g["output_ids"])
        assert g["meta_info"]["finish_reason"] == w["meta_info"]["finish_reason"]
    assert "JETSPEC tree prior: " in spec.tail(10**6) and "bigrams" in spec.tail(10**6)
    for p, g in zip(prompts, got):
        ref = reference[p]
        assert g["output_ids"] == ref.output_ids, p  # the oracle agrees with the plain server
        # the same drafts were made (prior-shaped trees): the same verify rounds as the reference
        # (SGLang leaves the counter out of a request that never reached a verify round)
        assert g["meta_info"].get("spec_verify_ct", 0) == ref.rounds, (p, g["meta_info"], ref.accepted,
                                                                       rounds_without[p])
    trained = got[: len(TRAINED)]
    accepted = sum(g["meta_info"]["spec_num_correct_drafts"] for g in trained)
    rounds = sum(g["meta_info"]["spec_verify_ct"] for g in trained)
    assert accepted >= rounds, "the overfit head should accept >= 1 draft per round on average"


def test_radix_cache_hits_keep_the_heads_context(setup):
    """The head's context lives in a pool keyed by the target's KV slots, so a request whose
    prefix comes from the radix cache (prompt, and tokens committed by earlier verify rounds)
    drafts from the same context as the reference decoder, which recomputes everything."""
    _, spec, ids, reference, _ = setup
    prompt = TRAINED[0]
    first = spec.generate(ids[prompt], NEW_TOKENS)
    second = spec.generate(ids[prompt], NEW_TOKENS)
    assert second["meta_info"]["cached_tokens"] >= len(ids[prompt]) - 1
    for run in (first, second):
        assert run["output_ids"] == reference[prompt].output_ids
        assert run["meta_info"]["spec_verify_ct"] == reference[prompt].rounds
    # second turn: prompt + half the answer, whose KV came from verify rounds of earlier requests
    half = NEW_TOKENS // 2
    turn = ids[prompt] + reference[prompt].output_ids[:half]
    cont = spec.generate(turn, half)
    assert cont["meta_info"]["cached_tokens"] >= len(turn) - 1
    assert cont["output_ids"] == reference[prompt].output_ids[half:]
    assert cont["meta_info"]["spec_num_correct_drafts"] >= cont["meta_info"]["spec_verify_ct"]


def test_sampled_requests_share_a_batch_with_greedy_ones(setup):
    """On CPU a batch with a sampled row is accepted by the host walk rule (SGLang's CPU verify
    is greedy-only); the greedy rows in it must still produce the greedy tokens."""
    _, spec, ids, reference, _ = setup
    greedy, sampled = TRAINED[1], TRAINED[2]
    items = [(ids[greedy], NEW_TOKENS, 0.0), (ids[sampled], NEW_TOKENS, 0.8),
             (ids[UNTRAINED[2][0]], NEW_TOKENS, 1.0)]
    out = _run_all(spec, items)
    assert out[0]["output_ids"] == reference[greedy].output_ids
    assert out[0]["meta_info"]["spec_verify_ct"] == reference[greedy].rounds
    for o in out[1:]:
        n = len(o["output_ids"])
        assert n == NEW_TOKENS or o["meta_info"]["finish_reason"]["type"] == "stop", o["meta_info"]
        assert o["meta_info"]["spec_verify_ct"] >= 1


def test_server_survives_the_idle_memory_check(setup):
    """SGLang checks for leaked KV slots when idle and treats a leak as an error."""
    _, spec, _, _, _ = setup
    time.sleep(6)
    assert spec.proc.poll() is None, spec.tail()
    assert spec.healthy()
    assert "Traceback" not in spec.log_since_mark(), spec.tail()


def test_round_counters_and_gauges_are_published(setup):
    """What a dashboard reads: the worker's counters in /get_server_info and the JETSPEC
    gauges on /metrics (static widths here: the verify width is the server budget)."""
    import json
    import urllib.request

    _, spec, _, _, _ = setup
    info = json.loads(urllib.request.urlopen(spec.url("/get_server_info"), timeout=30).read())
    js = info["internal_states"][0]["jetspec"]
    assert js["rounds"] > 0 and sum(js["accept_hist"]) == js["request_rounds"]
    assert js["budget"]["mode"] == "static" and js["seconds"]["verify"] > 0
    # the head's context pool was counted in SGLang's KV pool sizing (hooks.py, patch 6)
    assert js["head_pool"]["budgeted"] is True and js["head_pool"]["bytes_per_slot"] > 0, js["head_pool"]
    text = urllib.request.urlopen(spec.url("/metrics"), timeout=30).read().decode()
    width = [ln for ln in text.splitlines() if ln.startswith("sglang:jetspec_verify_width{")]
    assert width and float(width[0].rsplit(" ", 1)[1]) == BUDGET, width
    assert any(ln.startswith("sglang:jetspec_accept_length{") for ln in text.splitlines())
