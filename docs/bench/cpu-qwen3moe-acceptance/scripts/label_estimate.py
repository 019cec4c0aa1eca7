"""How well does a labelled pruned round estimate its own loss (core/loss_bound.pruned_outcome)?
Replays a trace with the held bound observed from labels (as the server does for greedy rounds)
and sums, over the pruned rounds, the estimated lost tokens against the true ones (the recorded
full trees say what they would have committed). Run from the repository root:

    python docs/bench/cpu-qwen3moe-acceptance/scripts/label_estimate.py TRACE NUM_EXPERTS HEAD
"""
import sys

from sglang_jetspec.bench.expert_replay import _labelled_loss, load_trace, with_acceptance, with_ngram
from sglang_jetspec.core.expert_aware_tree import schedule_batch
from sglang_jetspec.core.loss_bound import LossBound, committed
from sglang_jetspec.core.pair_prior import PairPrior

COST = {"a": 1e-3, "b": 2e-6, "c": 1e-4, "d": 0.0}


def main():
    trace, experts, head = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rounds = with_acceptance(with_ngram(load_trace(trace), PairPrior.load(head)), "ngram")
    held = LossBound(0.03)
    est = true = 0.0
    for r in rounds:
        if all(t.n == 1 for t in r.trees):
            continue
        s = schedule_batch(r.trees, [p.float().clamp(0, 1).double() for p in r.probs], r.predicted, COST,
                           max_expected_loss=held.bound)
        kept = [set(x.tolist()) for x in s.kept]
        held.next_is_probe()
        full, pruned = _labelled_loss(r, kept)
        held.observe(full, pruned, estimated=True)
        est += full - pruned
        true += sum(len(p) - committed(p, k) for p, k in zip(r.paths, kept))
    print(f"{trace}: {len(rounds)} rounds, held at 3% by labels; lost tokens estimated {est:.0f}, true {true:.0f} "
          f"({est / max(true, 1):.2f}x)")


if __name__ == "__main__":
    main()
