"""Replay that learns like the server: the acceptance model (n-gram split) learns online from each
round's PRUNED candidate trees (nodes whose outcome is known), not from the full trees. Compares
"known" sets: 'all-but-c' (the server's: all candidate nodes but the subtree of the pruned child the
path ran into) vs 'kept+children' (kept nodes and the pruned children of kept nodes), vs 'full'
(learn from the full trees: the replay's usual, impossible in the server). Held at 3% by labels.

    python docs/bench/cpu-qwen3moe-acceptance/scripts/learn_known.py TRACE NUM_EXPERTS [MODES] [width]

Run from the repository root (the 64-expert head's prior is read from models/).
"""
import sys
import torch
import sglang_jetspec.bench.expert_replay as er
from sglang_jetspec.core.conditional_acceptance import NGRAM_BINS, ConditionalAcceptance
from sglang_jetspec.core.expert_aware_tree import prune_tree, schedule_batch
from sglang_jetspec.core.loss_bound import LossBound, WidthBounds, committed, pruned_outcome
from sglang_jetspec.core.pair_prior import PairPrior
from sglang_jetspec.integration.expert_schedule import PROBE_EVERY

trace, E = sys.argv[1], int(sys.argv[2])
modes = sys.argv[3].split(",") if len(sys.argv) > 3 else ["full", "all-but-c", "kept+children"]
per_width = len(sys.argv) > 4 and sys.argv[4] == "width"
rounds = er.with_ngram(er.load_trace(trace), PairPrior.load("models/qwen3moe-e64-jetspec"))
COST = {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": 0.0}

for mode in modes:
    model = ConditionalAcceptance(logp_bins=NGRAM_BINS)
    bounds = WidthBounds(0.03, PROBE_EVERY) if per_width else LossBound(0.03, PROBE_EVERY)
    tot = [0, 0, 0.0, 0.0]
    est = [0.0, 0.0]
    for r in rounds:
        probs = [p.double() for p in model.trees_probs(r.trees, r.ngram)]
        widest = max(t.n for t in r.trees)
        held = bounds.for_width(widest) if per_width else bounds
        s = schedule_batch(r.trees, [p.float().clamp(0, 1).double() for p in probs], r.predicted, COST,
                           max_expected_loss=held.bound)
        full = [set(range(t.n)) for t in r.trees]
        kept = [set(x.tolist()) for x in s.kept]
        probe = widest > 1 and held.next_is_probe()
        if probe:
            kept = full
        if widest == 1:
            pass
        elif probe or mode == "full":
            if probe:
                held.observe(sum(len(p) for p in r.paths), sum(committed(p, k) for p, k in zip(r.paths, kept)))
            model.update_from_trees(r.trees, r.paths, [t.n for t in r.trees], None, r.ngram)
        if widest > 1 and not probe:
            lt, lp, ln = [], [], []
            f_est, p_tok = 0.0, 0
            for t, path, kk, p, ng in zip(r.trees, r.paths, kept, probs, r.ngram):
                ks = sorted(kk)
                m = committed(path, kk)
                where = {v: i for i, v in enumerate(ks)}
                pick = int(t.tokens[path[m]]) if m < len(path) else -1
                par = t.parents.tolist()
                known, cpath, lost = pruned_outcome(par, t.tokens.tolist(), ks, p.clamp(0, 1).tolist(),
                                                    [where[v] for v in path[:m]], pick)
                f_est += m + lost
                p_tok += m
                if mode == "kept+children":
                    known = [v for v in range(t.n) if v in kk or par[v] in kk]
                kw = {v: i for i, v in enumerate(known)}
                lt.append(prune_tree(t, torch.tensor(known)) if len(known) < t.n else t)
                lp.append([kw[v] for v in cpath])
                ln.append(ng[known])
            held.observe(f_est, p_tok, estimated=True)
            est[0] += f_est
            est[1] += sum(len(p) for p in r.paths)
            if mode != "full":
                model.update_from_trees(lt, lp, None, None, ln)
        fd, _ = er._loads(r.routed, full, E, None, 1)
        pd, _ = er._loads(r.routed, kept, E, None, 1)
        tot[0] += sum(len(p) for p in r.paths)
        tot[1] += sum(committed(p, k) for p, k in zip(r.paths, kept))
        tot[2] += fd
        tot[3] += pd
    ends = ({w: round(b.bound, 3) for w, b in sorted(bounds.by_width.items())} if per_width else round(bounds.bound, 3))
    print(f"{mode}: accept {100*(tot[1]/tot[0]-1):+.1f}%, experts {100*(tot[3]/tot[2]-1):+.1f}%, "
          f"labelled estimate of full tokens / truth {est[0]/max(est[1],1):.3f}, bound ended {ends}", flush=True)
