"""Is the width policy's expected-tokens curve biased at the ranks it verifies?

    python docs/bench/cpu-qwen3moe-prior-auto/scripts/curve_replay.py models/qwen3moe-tiny \
        models/qwen3moe-tiny-jetspec data/prompts/code.heldout.jsonl 12 build/rec_code.pkl

Decodes the first N prompts with the reference decoder at budget 16 (48 new tokens, width 7, the
head folder's prior), recording each round's tree, accepted path and bonus token (in PKL; reused
when it exists), then replays the rounds through a BudgetPolicy with a synthetic step time: each
round verifies the best-first prefix of the width the policy plans (its accepted path is the
recorded one cut at the first node outside the prefix; the bonus is then that node's token).
Prints the true per-rank acceptance of the full-tree rounds next to the policy's curve.
"""
import os
import pickle
import sys

import torch

from sglang_jetspec.core.budget_controller import tree_prefix
from sglang_jetspec.core.checkpoint import load_head
from sglang_jetspec.integration.budget_policy import BudgetPolicy
from sglang_jetspec.reference import decoder as dec
from sglang_jetspec.reference.prompts import encode_prompts, read_prompts
from sglang_jetspec.reference.target import HFTarget

B = 16


def record(model, head_dir, prompts_file, n):
    torch.set_num_threads(1)
    target = HFTarget(model)
    head = load_head(head_dir, device=str(target.device), dtype=target.dtype)
    ids = encode_prompts(target.tokenizer, read_prompts(prompts_file)[:n])
    rec = []

    def spy(accept):
        def run(tree, logits):
            res = accept(tree, logits)
            rec.append((tree, list(res.accepted_nodes), int(res.bonus_token)))
            return res
        return run
    dec.accept_greedy_lazy = spy(dec.accept_greedy_lazy)
    dec.accept_greedy = spy(dec.accept_greedy)
    decoder = dec.ReferenceDecoder(target, head, dec.TreeSettings(budget=B, width=7))
    for p in ids:
        decoder.generate(p, 48)
    return rec


def replay(rounds, cost, skip=20):
    """The policy after the replay, the widths it planned, and its per-rank curve averaged over
    the rounds after the first `skip` (as planned, before each round)."""
    pol, hist = BudgetPolicy(B, draft_depth=B - 1), {}
    total = [0.0] * (B - 1)
    for r, (tree, path, bonus) in enumerate(rounds):
        if r >= skip:
            total = [a + b for a, b in zip(total, pol._curve_list())]
        w = pol.plan(1, None)
        hist[w] = hist.get(w, 0) + 1
        b = min(w, tree.n)
        cut = next((k for k, j in enumerate(path) if j >= b), len(path))  # indices rise along a path
        bonus_token = int(tree.tokens[path[cut]]) if cut < len(path) else bonus
        probe = pol.probe
        pol.observe([tree_prefix(tree, b)], [b], [path[:cut]], [bonus_token], cost(b),
                    probe_trees=[tree] if probe else None, probe_budgets=[tree.n] if probe else None)
    return pol, hist, [a / max(len(rounds) - skip, 1) for a in total]


def main():
    model, head_dir, prompts_file, n, pkl = sys.argv[1:6]
    if not os.path.exists(pkl):
        rounds = record(model, head_dir, prompts_file, int(n))
        with open(pkl, "wb") as f:
            pickle.dump(rounds, f)
    with open(pkl, "rb") as f:
        rounds = pickle.load(f)
    full = [r for r in rounds if r[0].n == B]
    hits = [0] * (B - 1)
    for _, path, _ in full:
        for j in path[1:]:
            hits[j - 1] += 1
    rate = [h / len(full) for h in hits]
    show = lambda xs: " ".join(f"{x:.2f}" for x in xs)
    print(f"{len(rounds)} rounds, {len(full)} with a full {B}-node tree")
    print("true per-rank acceptance  ", show(rate))
    print("true expected tokens by width", show([1.0] + [1.0 + sum(rate[:i + 1]) for i in range(len(rate))]))
    for per_node_ms in (1.0, 0.2):
        pol, hist, mean_curve = replay(rounds, lambda w: 0.030 + per_node_ms * 1e-3 * w)
        print(f"\nsynthetic step 30 ms + {per_node_ms} ms a node: widths {dict(sorted(hist.items()))}, "
              f"bias {pol.bias_ratio:.3f}")
        print("policy expected tokens by width", show(pol.snapshot()["expected_tokens_curve"]))
        print("policy per-rank, mean over rounds 21-", show(mean_curve))
        print("policy per-rank at the end", show(pol._curve_list()))
        print("observed (last 20 obs)    ", show(pol.emp.tolist()))
        print("calibrated x bias         ", show([m * pol.bias_ratio for m in pol.marginal.tolist()]))


if __name__ == "__main__":
    main()
