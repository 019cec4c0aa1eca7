"""The worker's expert-aware scheduling component (integration/expert_schedule.py) on synthetic
rounds: a target whose router sends each token to fixed experts, a draft whose trees the target
accepts along the best path. Checked: it learns the routing (precision/recall -> 1), prunes
trees to fewer predicted experts without giving up more than 1% of the expected tokens, keeps
every kept node's ancestors, counts the verify's real distinct experts, and refuses bad input."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from sglang_jetspec.core.tree import build_tree
from sglang_jetspec.integration.expert_schedule import (
    LOSS_TARGET, PROBE_EVERY, ExpertScheduler, check_expert_mode, hold_knob_from_env, loss_from_env, mode_from_env,
    moe_shape)

L, E, K, VOCAB = 3, 32, 2, 64


def route(tokens: torch.Tensor) -> torch.Tensor:
    """The synthetic router: token t -> experts (t % E, (t * 3 + l) % E) in layer l (distinct)."""
    t = tokens.long()
    out = torch.empty(t.numel(), L, K, dtype=torch.long)
    for layer in range(L):
        a, b = t % E, (t * 3 + layer + 1) % E
        b = torch.where(b == a, (b + 1) % E, b)
        out[:, layer, 0], out[:, layer, 1] = a, b
    return out


def rounds(sched: ExpertScheduler, n_rounds: int, bs: int = 1, budget: int = 16, seed: int = 0,
           labels: bool = False):
    """labels: pass the bonus tokens (the target's pick after each accepted path), as the worker
    does for greedy rounds; without, the rounds do not label themselves (recursive rejection)."""
    g = torch.Generator().manual_seed(seed)
    for r in range(n_rounds):
        lps = [torch.log_softmax(2.5 * torch.randn(6, VOCAB, generator=g), -1) for _ in range(bs)]
        cands = [build_tree(int(torch.randint(VOCAB, (1,), generator=g)), lp, budget, 4) for lp in lps]
        trees = sched.schedule(cands, [-1] * bs)
        for t in trees:  # every kept node's parent is kept (the pruned tree is a valid tree)
            assert all(int(p) < i for i, p in enumerate(t.parents.tolist()) if i > 0)
        n = max(t.n for t in trees)
        rows = torch.cat([torch.cat([t.tokens, t.tokens[:1].repeat(n - t.n)]) for t in trees])
        paths, bonus = [], []
        for t, lp in zip(trees, lps):  # accept the best child while it is the draft's argmax
            path, node = [0], 0
            while True:
                kids = [i for i in range(t.n) if int(t.parents[i]) == node]
                want = int(lp[int(t.depths[node])].argmax()) if int(t.depths[node]) < 6 else -1
                nxt = [i for i in kids if int(t.tokens[i]) == want]
                if not nxt:
                    break
                node = nxt[0]
                path.append(node)
            paths.append(path)
            d = int(t.depths[path[-1]])
            bonus.append(int(lp[d].argmax()) if d < 6 else 0)
        seconds = 0.002 + 0.0001 * len(rows)  # the verify pays per distinct (layer, expert):
        seconds += 0.001 * sum(int(torch.unique(route(rows)[:, layer]).numel()) for layer in range(L))
        sched.observe(trees, n, route(rows), paths, bonus if labels else [None] * bs, seconds)
    return sched


def test_learns_routing_prunes_to_fewer_experts_and_keeps_expected_tokens():
    on = rounds(ExpertScheduler(L, E, K, prune=True, max_expected_loss=None), 60)  # ratio only
    off = rounds(ExpertScheduler(L, E, K, prune=False), 60)
    bounded = rounds(ExpertScheduler(L, E, K, prune=True), 60)  # default: give up <= 1%
    s_on, s_off = on.snapshot(), off.snapshot()
    assert 0.99 - 1e-9 <= bounded.snapshot()["expected_tokens_kept_share"] < 1.0
    assert bounded.snapshot()["mean_distinct_per_verify"] < s_off["mean_distinct_per_verify"]
    assert min(s_off["recall_per_layer"]) > 0.85 and min(s_off["precision_per_layer"]) > 0.85
    assert s_off["kept_nodes"] == s_off["candidate_nodes"]  # off: verified as built
    assert s_on["kept_nodes"] < s_on["candidate_nodes"]
    assert s_on["mean_distinct_per_verify"] < 0.8 * s_off["mean_distinct_per_verify"]
    assert s_on["expected_tokens_kept_share"] < 0.97 and s_off["expected_tokens_kept_share"] == 1.0
    assert s_on["rounds"] == 60 and len(s_on["distinct_per_layer_sum"]) == L


@pytest.mark.parametrize("knob", ["fraction", "price"])
@pytest.mark.parametrize("labels", [False, True])
def test_held_loss_observes_each_pruned_round_or_probes_and_steers_the_bound(labels, knob):
    """With a held accepted-length loss: rounds that label themselves (greedy) each observe their
    own loss and never probe; without labels one pruning round in PROBE_EVERY verifies the
    candidates whole and teaches the bound what the pruning would have cost. Either way the bound
    moves off its start."""
    n_rounds = 40
    held = ExpertScheduler(L, E, K, prune=True, hold_loss=0.03, hold_knob=knob)
    kept, cands = [], []
    orig = held.schedule

    def spy(trees, prev):
        out = orig(trees, prev)
        kept.append(sum(t.n for t in out))
        cands.append(sum(t.n for t in trees))
        return out
    held.schedule = spy
    rounds(held, n_rounds, labels=labels)
    snap = held.snapshot()["held"]
    probes = [] if labels else [i for i in range(n_rounds) if i % PROBE_EVERY == PROBE_EVERY - 1]
    assert snap["probes"] == len(probes) and snap["target"] == 0.03
    assert snap["labelled"] == (n_rounds if labels else 0)
    assert ExpertScheduler(L, E, K, prune=False, hold_loss=0.03).snapshot()["held"] is None  # off: nothing held
    assert all(kept[i] == cands[i] for i in probes)  # probes verify whole
    assert sum(kept[i] < cands[i] for i in range(n_rounds) if i not in probes) > 0  # the rest prune
    assert snap["bound"] != pytest.approx(0.03) and snap["observed_loss"] is not None
    assert 0.0 <= snap["observed_loss"] < 1.0


def test_the_price_knob_prunes_each_round_at_its_widths_held_price(monkeypatch):
    """hold_knob "price" (the worker's default): each pruned round keeps nodes down to the price
    bound / target x PRICE_AT_TARGET x its width's reference rate, the reference being the running
    mean of the earlier rounds' whole candidate trees' rate (a width's first round: its own), and
    the held bound steers it as it steered the share."""
    import sglang_jetspec.integration.expert_schedule as es
    from sglang_jetspec.core.held_price import PRICE_AT_TARGET, REF_WEIGHT

    sched = ExpertScheduler(L, E, K, prune=True, hold_loss=0.03, hold_knob="price")
    seen, unpriced, orig = [], [], es.schedule_batch

    def spy(trees, probs, experts, cost, **kw):
        width = 1 << (max(t.n for t in trees) - 1).bit_length()
        bound, ref = sched._held.bound, dict(sched.rates.by_width)
        s = orig(trees, probs, experts, cost, **kw)
        if "price" not in kw:  # the cost model does not price anything yet: the share, no reference
            assert width not in sched.rates.by_width and kw["max_expected_loss"] == bound
            unpriced.append(cost.predict(1, torch.zeros(L)))
            return s
        seen.append((width, kw, bound, ref, s.full_expected / s.full_seconds, sum(t.n for t in s.trees),
                     sum(t.n for t in trees)))
        return s
    monkeypatch.setattr(es, "schedule_batch", spy)
    for i in range(4):
        rounds(sched, 5, budget=8 if i % 2 else 40, seed=i, labels=True)
    assert len(unpriced) <= 2 and all(x == 0 for x in unpriced) and len(seen) >= 18
    mean = {}
    for width, kw, bound, ref, rate, kept, cand in seen:
        start = ref.get(width, rate)  # a width's first round prices itself on its own rate
        assert kw["price"] == pytest.approx(bound / 0.03 * PRICE_AT_TARGET * start)
        mean[width] = rate if width not in mean else mean[width] + REF_WEIGHT * (rate - mean[width])
    assert {int(k): v for k, v in sched.snapshot()["reference_rates"].items()} == pytest.approx(mean)
    assert sum(kept < cand for *_, kept, cand in seen) > 0  # it prunes
    snap = sched.snapshot()
    assert snap["hold_knob"] == "price" and snap["price"] == seen[-1][1]["price"]
    assert snap["held"]["labelled"] == 20 and snap["held"]["bound"] != pytest.approx(0.03)
    # the share knob (the class default) never prices
    monkeypatch.setattr(es, "schedule_batch", orig)
    share = rounds(ExpertScheduler(L, E, K, prune=True, hold_loss=0.03), 3, labels=True).snapshot()
    assert share["hold_knob"] == "fraction" and share["price"] is None and share["reference_rates"] == {}


def test_each_tree_width_holds_its_own_bound(monkeypatch):
    """Budgets taking turns (as the bench's configurations, or the adaptive width's choices): each
    round prunes with its own width's bound (the widest candidate tree, rounded up to a power of
    two) and only that bound learns from it."""
    import sglang_jetspec.integration.expert_schedule as es

    held = ExpertScheduler(L, E, K, prune=True, hold_loss=0.03)
    seen, orig = [], es.schedule_batch

    def spy(trees, probs, experts, cost, **kw):
        seen.append((max(t.n for t in trees), kw["max_expected_loss"], held.hold.shared))
        return orig(trees, probs, experts, cost, **kw)
    monkeypatch.setattr(es, "schedule_batch", spy)
    for i in range(6):
        rounds(held, 4, budget=8 if i % 2 else 40, seed=i, labels=True)
        assert (8 if i % 2 else 64) in held.hold.by_width
    snap = held.snapshot()["held"]
    assert set(snap["by_width"]) == {"8", "64"} and snap["labelled"] == 24
    assert snap["by_width"]["8"]["labelled"] == 12 and snap["by_width"]["64"]["labelled"] == 12
    assert snap["by_width"]["8"]["bound"] != snap["by_width"]["64"]["bound"]
    # the bound each round pruned with was its width's at the time: replay the learning order
    assert len(seen) == 24 and {1 << (n - 1).bit_length() for n, _, _ in seen} == {8, 64}
    n4, b4, shared4 = seen[4]  # the narrow width's first round: its own part still at the start,
    assert n4 <= 8 and shared4 != 0.0 and b4 == pytest.approx(0.03 * math.exp(shared4))
    n3, b3, shared3 = seen[3]  # while the wide width's own part had moved with the shared one
    assert n3 > 32 and b3 == pytest.approx(0.03 * math.exp(2 * shared3))


def test_the_labelled_estimate_of_the_lost_tokens_matches_the_candidates_own_outcome():
    """The held loss observes each pruned greedy round's loss from its bonus token plus the model's
    expectation below the pruned child the path ran into. On synthetic rounds whose target picks
    are SAMPLED from the draft's distribution (so paths run into pruned nodes), the scheduler's
    estimates summed over the rounds match what the whole candidate trees would have committed
    (the same picks applied to them), and the bound holds the loss near its 3% target."""
    bs, depth = 2, 12
    sched = ExpertScheduler(L, E, K, prune=True, hold_loss=0.03)
    g = torch.Generator().manual_seed(0)

    def path_of(t, picks):
        path, node = [0], 0
        while int(t.depths[node]) < depth:
            nxt = [i for i in range(t.n) if int(t.parents[i]) == node and int(t.tokens[i]) == int(picks[int(t.depths[node])])]
            if not nxt:
                break
            node = nxt[0]
            path.append(node)
        return path
    est, true = [0.0, 0.0], [0, 0]
    for _ in range(150):
        lps = [torch.log_softmax(5.0 * torch.randn(depth, VOCAB, generator=g), -1) for _ in range(bs)]
        picks = [torch.multinomial(lp.exp(), 1, generator=g).squeeze(1) for lp in lps]
        # narrow, deep trees: a path that runs into a pruned node often had more below it (the
        # model's tail estimate matters: without it the estimate falls to ~0.6x the truth)
        cands = [build_tree(int(torch.randint(VOCAB, (1,), generator=g)), lp, 64, 2) for lp in lps]
        trees = sched.schedule(cands, [-1] * bs)
        held, seen = sched._held, []
        own_observe = held.own.observe
        held.own.observe = lambda f, p, estimated=False: seen.append((f, p)) or own_observe(f, p, estimated)
        n = max(t.n for t in trees)
        rows = torch.cat([torch.cat([t.tokens, t.tokens[:1].repeat(n - t.n)]) for t in trees])
        paths = [path_of(t, pk) for t, pk in zip(trees, picks)]
        bonus = [int(pk[int(t.depths[p[-1]])]) if int(t.depths[p[-1]]) < depth else 0
                 for t, p, pk in zip(trees, paths, picks)]
        seconds = 0.002 + 0.0001 * len(rows)
        seconds += 0.001 * sum(int(torch.unique(route(rows)[:, layer]).numel()) for layer in range(L))
        sched.observe(trees, n, route(rows), paths, bonus, seconds)
        held.own.observe = own_observe
        if seen:  # a pruned round that labelled itself
            est[0], est[1] = est[0] + seen[0][0], est[1] + seen[0][1]
            true[0] += sum(len(path_of(c, pk)) for c, pk in zip(cands, picks))
            true[1] += sum(len(p) for p in paths)
    assert est[1] == true[1] > 0  # the pruned trees' own tokens are known exactly
    lost_est, lost_true = est[0] - est[1], true[0] - true[1]
    assert lost_true > 10 and 0.8 < lost_est / lost_true < 1.25, (lost_est, lost_true)
    assert lost_true / true[0] < 0.06  # held near 3% (the bound starts at 3% and follows)


def test_a_labelled_pruned_round_teaches_the_model_its_pruned_nodes_in_candidate_ranks():
    """After a pruned greedy round the acceptance model learns from the CANDIDATE tree (less the
    nodes whose outcome stays unknown), with the accepted path mapped to it: the pruned children
    of accepted nodes are labelled too, with their candidate sibling ranks."""
    sched = ExpertScheduler(L, E, K, prune=True, max_expected_loss=0.3)
    rounds(sched, 10, labels=True)  # learn the routing first
    learned, verified = [], []
    orig_update, orig_observe = sched.acceptance.update_from_trees, sched.observe

    def update(trees, paths, *args):
        learned.append((trees[0], paths[0]))
        return orig_update(trees, paths, *args)

    def observe(trees, n, routed, paths, *args):
        verified.append((trees[0], paths[0]))
        return orig_observe(trees, n, routed, paths, *args)
    sched.acceptance.update_from_trees, sched.observe = update, observe
    rounds(sched, 30, labels=True, seed=1)
    assert len(learned) == len(verified) == 30
    more = 0
    for (lt, lpath), (vt, vpath) in zip(learned, verified):
        assert lt.n >= vt.n and lpath[0] == 0
        assert all(int(lt.parents[v]) == u for u, v in zip(lpath, lpath[1:]))  # a path of the learned tree
        # the verified path, mapped: same tokens; the learned one may go one node further (into
        # the pruned child whose token the target picked)
        assert lt.tokens[lpath[:len(vpath)]].tolist() == vt.tokens[vpath].tolist()
        assert len(vpath) <= len(lpath) <= len(vpath) + 1
        more += lt.n > vt.n
    assert more > 0  # rounds that pruned still taught the model the pruned nodes' outcomes


def test_prefill_routing_teaches_the_predictor_before_any_verify():
    sched = ExpertScheduler(L, E, K)
    toks = torch.arange(VOCAB).repeat(3)
    sched.learn_prefill(toks, route(toks), [VOCAB, 2 * VOCAB])
    pred = sched.predictor.predict(torch.arange(VOCAB))
    hit = (pred.sort(-1).values == route(torch.arange(VOCAB)).sort(-1).values).float().mean()
    assert hit > 0.95


def test_bad_shapes_and_settings_are_named():
    sched = ExpertScheduler(L, E, K)
    t = build_tree(1, torch.log_softmax(torch.randn(3, VOCAB), -1), 4, 2)
    sched.schedule([t], [-1])
    with pytest.raises(ValueError, match=r"routed experts shape \(3, 3, 2\) must be \[bs\*n = 4"):
        sched.observe([t], 4, torch.zeros(3, L, K, dtype=torch.long), [[0]], [None], 0.01)
    assert mode_from_env({}) == "on" and mode_from_env({"SGLANG_JETSPEC_EXPERT_AWARE": "OFF"}) == "off"
    with pytest.raises(ValueError, match=r"SGLANG_JETSPEC_EXPERT_AWARE='yes' must be one of \['on', 'off'\]"):
        mode_from_env({"SGLANG_JETSPEC_EXPERT_AWARE": "yes"})
    moe = SimpleNamespace(num_experts=8, num_experts_per_tok=2, num_hidden_layers=6, model_type="qwen3_moe")
    dense = SimpleNamespace(num_hidden_layers=30, model_type="llama")
    assert moe_shape(moe) == (6, 8, 2) and moe_shape(dense) is None
    assert check_expert_mode(dense, {}) == [] and check_expert_mode(moe, {"SGLANG_JETSPEC_EXPERT_AWARE": "on"}) == []
    assert "needs a Mixture-of-Experts target" in check_expert_mode(dense, {"SGLANG_JETSPEC_EXPERT_AWARE": "on"})[0]
    assert loss_from_env({}) == LOSS_TARGET == 0.03 and loss_from_env({"SGLANG_JETSPEC_EXPERT_LOSS": " 0.1 "}) == 0.1
    for bad in ("0", "0.5", "-0.01", "three", "nan"):
        errs = check_expert_mode(moe, {"SGLANG_JETSPEC_EXPERT_LOSS": bad})
        assert errs == [f"SGLANG_JETSPEC_EXPERT_LOSS={bad!r} must be a number in (0, 0.5): the share of the "
                        "accepted length expert-aware pruning may give up (default 0.03)"]
    assert hold_knob_from_env({}) == "price" and hold_knob_from_env({"SGLANG_JETSPEC_EXPERT_HOLD": "Fraction"}) \
        == "fraction"
    assert check_expert_mode(moe, {"SGLANG_JETSPEC_EXPERT_HOLD": "share"}) == [
        "SGLANG_JETSPEC_EXPERT_HOLD='share' must be one of ['price', 'fraction']"]
    with pytest.raises(ValueError, match=r"hold_knob 'share' must be one of \['price', 'fraction'\]"):
        ExpertScheduler(L, E, K, hold_knob="share")


def test_a_trace_replays_exactly_and_pruning_under_ep_lowers_the_most_loaded_rank(tmp_path, capsys):
    """The trace the worker writes (scheduling off) replays offline: the full trees' accepted
    length equals what was verified, pruning keeps ancestors so its accepted length is the kept
    path prefix, and under a cost priced by the most loaded EP rank it lowers that rank's load."""
    from sglang_jetspec.bench.expert_replay import committed, load_trace, markdown, replay

    trace = tmp_path / "trace.jsonl"
    sched = rounds(ExpertScheduler(L, E, K, prune=False, trace_path=str(trace)), 30, bs=2)
    sched._trace.close()
    # a round of roots only (the worker predicts nothing there) replays as it was verified
    root_only = {"trees": [{"tokens": [5], "parents": [-1], "depths": [0], "scores": [0.0], "ranks": [0]}] * 2,
                 "paths": [[0], [0]], "routed": [route(torch.tensor([5])).tolist()] * 2, "probs": None,
                 "predicted": None}
    with open(trace, "a") as f:
        f.write(json.dumps(root_only) + "\n")
    recs = load_trace(trace)
    assert len(recs) == 31 and all(len(r.trees) == 2 for r in recs)
    assert replay(recs[30:], E, 1, {"a": 1e-3, "b": 1e-6, "c": 1e-4, "d": None}, 0.03)["accept_length_pruned"] == 1.0
    recs = recs[:30]
    assert committed([0, 3, 5], {0, 3}) == 2 and committed([0, 3, 5], {0, 1, 3, 5}) == 3
    cost = {"a": 1e-3, "b": 1e-6, "c": 1e-4, "d": None}
    full = replay(recs, E, 1, cost, max_expected_loss=None)
    assert full["nodes_kept"] < 1.0 and full["distinct_per_layer_pruned"] < full["distinct_per_layer_full"]
    accepted = sum(len(p) for r in recs for p in r.paths) / sum(len(r.trees) for r in recs)
    assert full["accept_length_full"] == pytest.approx(accepted)
    assert full["accept_length_pruned"] <= full["accept_length_full"]
    oracle = replay(recs, E, 1, cost, max_expected_loss=None, oracle_routing=True)
    # the scheduler sees the true experts: here (a predictor still learning in the first rounds)
    # it prunes to fewer real experts than with the prediction
    assert oracle["oracle_routing"] and not full["oracle_routing"]
    assert oracle["distinct_per_layer_pruned"] < full["distinct_per_layer_pruned"]
    assert oracle["accept_length_full"] == full["accept_length_full"]
    assert "| one device (oracle routing) | 30 |" in markdown([oracle])
    # other acceptance models replayed in place of the recorded probabilities: the conditional
    # model replayed offline gives exactly what the server's scheduler saw; the oracle (the
    # recorded paths) gives up no accepted token and keeps only what it must
    from sglang_jetspec.bench.expert_replay import with_acceptance

    again = with_acceptance(recs, "conditional")
    assert all(torch.allclose(a.double(), b.double(), atol=1e-6) for r, q in zip(recs, again)
               for a, b in zip(r.probs, q.probs))
    best = replay(recs, E, 1, cost, max_expected_loss=0.03, acceptance="oracle")
    assert best["accept_length_pruned"] == best["accept_length_full"]
    assert best["distinct_per_layer_pruned"] < best["distinct_per_layer_full"] and best["nodes_kept"] < 0.5
    assert "| one device (oracle acceptance) | 30 |" in markdown([best])
    cal = replay(recs, E, 1, cost, max_expected_loss=0.03, acceptance="calibrated")
    assert cal["acceptance"] == "calibrated" and cal["accept_length_pruned"] <= cal["accept_length_full"]
    with pytest.raises(ValueError, match="acceptance 'perfect' must be one of"):
        with_acceptance(recs, "perfect")
    ep4 = replay(recs, E, 4, cost, max_expected_loss=None)
    assert ep4["max_rank_per_layer_pruned"] < ep4["max_rank_per_layer_full"] <= E // 4
    assert "| ep = 4 | 30 |" in markdown([full, ep4])
    # held per tree width, as the server: every width the trace's rounds had gets its own bound
    hold = {"target": 0.03, "probe_every": PROBE_EVERY}
    per = replay(recs, E, 1, cost, None, hold=hold, per_width=True)
    widths = {1 << (max(t.n for t in r.trees) - 1).bit_length() for r in recs}
    assert set(per["held"]["by_width"]) == {str(w) for w in widths} and per["per_width"]
    assert "by labels per width, bounds ended " in markdown([per])
    one = replay(recs, E, 1, cost, None, hold=hold)
    assert "by_width" not in one["held"] and not one["per_width"]
    # the server's default since 2026-12-07 late night: the held bound sets a price
    priced = replay(recs, E, 1, cost, None, hold=hold, per_width=True, knob="price")
    assert priced["knob"] == "price" and per["knob"] == "fraction" and full["knob"] is None
    assert priced["nodes_kept"] < 1.0 and priced["nodes_kept"] != per["nodes_kept"]
    assert "by labels per width with a price, bounds ended " in markdown([priced])
    with pytest.raises(ValueError, match="knob 'price' needs a held loss"):
        replay(recs, E, 1, cost, 0.03, knob="price")
    from launch.replay_experts import main as replay_main

    with pytest.raises(SystemExit, match="--hold-per width needs --hold-loss"):
        replay_main(["--trace", str(trace), "--num-experts", str(E), "--hold-per", "width"])
    replay_main(["--trace", str(trace), "--num-experts", str(E), "--ep", "1", "--hold-loss", "0.03",
                 "--hold-per", "width"])
    assert "held at 3% by labels per width, bounds ended " in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--hold-knob price needs --hold-loss"):
        replay_main(["--trace", str(trace), "--num-experts", str(E), "--hold-knob", "price"])
    replay_main(["--trace", str(trace), "--num-experts", str(E), "--ep", "1,4", "--hold-loss", "0.03",
                 "--hold-per", "width", "--hold-knob", "price"])
    assert capsys.readouterr().out.count("held at 3% by labels per width with a price, bounds ended ") == 2
    with pytest.raises(FileNotFoundError, match="SGLANG_JETSPEC_EXPERT_TRACE"):
        load_trace(tmp_path / "missing.jsonl")
    drafted = json.loads(trace.read_text().splitlines()[0]) | {"probs": None}
    (tmp_path / "bad.jsonl").write_text(json.dumps(drafted) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: round with drafted nodes but without probs"):
        load_trace(tmp_path / "bad.jsonl")


def test_pruning_pauses_while_it_costs_more_than_it_saves():
    """gate=True (the worker's setting): while the scheduler's own time per round exceeds the
    verify time its cost model says the pruning saved, the trees go to verify as built (no
    prediction either), except one round in PRUNE_RECHECK, which prunes and measures again."""
    from sglang_jetspec.integration.expert_schedule import PRUNE_RECHECK

    class Clock:  # every reading advances by `step` seconds: the scheduler's own time
        def __init__(self, step):
            self.t, self.step = 0.0, step

        def __call__(self):
            self.t += self.step
            return self.t

    slow = ExpertScheduler(L, E, K, gate=True)
    slow.clock = Clock(10.0)  # 10 s of scheduling per round: never worth it
    rounds(slow, 2 * PRUNE_RECHECK + 1)
    snap = slow.snapshot()
    assert snap["gated_rounds"] == 2 * (PRUNE_RECHECK - 1) and snap["own_ms"] == pytest.approx(1e4)
    assert snap["candidate_nodes"] >= snap["kept_nodes"] and snap["rounds"] == 2 * PRUNE_RECHECK + 1
    free = ExpertScheduler(L, E, K, gate=True)
    free.clock = Clock(0.0)  # costs nothing: always prunes
    rounds(free, 2 * PRUNE_RECHECK + 1)
    assert free.snapshot()["gated_rounds"] == 0 and free.snapshot()["saved_ms"] >= 0
    ungated = ExpertScheduler(L, E, K)  # the default for code that calls it directly
    ungated.clock = Clock(10.0)
    rounds(ungated, PRUNE_RECHECK)
    assert ungated.snapshot()["gated_rounds"] == 0


def test_trace_records_each_nodes_draft_logprob(tmp_path):
    from sglang_jetspec.bench.expert_replay import load_trace
    from sglang_jetspec.core.tree import node_draft_logprobs

    trace = tmp_path / "trace.jsonl"
    sched = ExpertScheduler(L, E, K, prune=False, trace_path=str(trace))
    assert sched.wants_draft_logprobs and not ExpertScheduler(L, E, K).wants_draft_logprobs
    lp = torch.log_softmax(torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(3)), -1)
    vals, ids = lp.topk(8, -1)
    tree = build_tree(9, lp, 10, 3)
    own = node_draft_logprobs(tree, vals, ids)
    out = sched.schedule([tree], [-1], [own])
    sched.observe(out, tree.n, route(tree.tokens), [[0]], [None], 0.01)
    sched._trace.close()
    (rec,) = load_trace(trace)
    torch.testing.assert_close(rec.logps[0], own, atol=1e-5, rtol=0)


def test_with_the_heads_prior_acceptance_splits_on_each_nodes_ngram_logprob(tmp_path):
    """A head with an n-gram prior: the acceptance model splits on each node's n-gram log-prob
    (its grandparent at depth 1 is the committed token before the anchor), learns from the
    verified trees' values, and the trace records them so `--acceptance ngram` replays it."""
    from sglang_jetspec.bench.expert_replay import load_trace, replay, with_acceptance
    from sglang_jetspec.core.conditional_acceptance import NGRAM_BINS
    from sglang_jetspec.core.pair_prior import PairPrior

    g = torch.Generator().manual_seed(4)
    prior = PairPrior.from_sequences([torch.randint(0, VOCAB, (200,), generator=g).tolist() for _ in range(4)], VOCAB)
    trace = tmp_path / "trace.jsonl"
    sched = ExpertScheduler(L, E, K, prune=False, trace_path=str(trace), prior=prior)
    assert sched.acceptance.logp_bins == NGRAM_BINS and ExpertScheduler(L, E, K).acceptance.logp_bins == ()
    lp = torch.log_softmax(2.0 * torch.randn(5, VOCAB, generator=g), -1)
    tree = build_tree(9, lp, 12, 3)
    out = sched.schedule([tree], [17])
    sched.observe(out, tree.n, route(tree.tokens), [[0]], [None], 0.01)
    assert sched.acceptance.updates == 1
    rounds(sched, 20, bs=2)
    sched._trace.close()
    recs = load_trace(trace)
    torch.testing.assert_close(recs[0].ngram[0], prior.node_logprobs(tree, 17), atol=1e-5, rtol=0)
    assert recs[0].ngram[0][1] != pytest.approx(float(prior.node_logprobs(tree, None)[1]))  # depth 1 reads 17
    row = replay(recs, E, 1, {"a": 1e-3, "b": 1e-6, "c": 1e-4, "d": None}, 0.03, acceptance="ngram")
    assert row["acceptance"] == "ngram" and row["accept_length_pruned"] <= row["accept_length_full"]
    plain = load_trace(trace)
    for r in plain:
        r.ngram = None
    with pytest.raises(ValueError, match="needs each node's n-gram log-prob"):
        with_acceptance(plain, "ngram")


def test_ngram_values_reused_across_a_round_equal_fresh_ones():
    """The n-gram values computed for the candidates are reused for the verified and learned
    trees of the same round (sliced for sub-trees): equal to computing them afresh."""
    from sglang_jetspec.core.pair_prior import PairPrior

    g = torch.Generator().manual_seed(6)
    prior = PairPrior.from_sequences([torch.randint(0, VOCAB, (300,), generator=g).tolist() for _ in range(4)], VOCAB)
    sched = ExpertScheduler(L, E, K, prune=True, max_expected_loss=0.3, prior=prior)
    got = []
    orig = sched.acceptance.update_from_trees

    def update(trees, paths, sizes=None, bonus=None, ngram=None):
        got.append((trees, ngram))
        return orig(trees, paths, sizes, bonus, ngram)
    sched.acceptance.update_from_trees = update
    rounds(sched, 12, bs=3, labels=True)
    rounds(sched, 6, bs=3, labels=False, seed=2)
    assert len(got) == 18
    for trees, ngram in got:
        for t, v in zip(trees, ngram):
            torch.testing.assert_close(v, prior.node_logprobs(t, -1), atol=0, rtol=0)
