"""Per-round cost of JetSpec on the reference path, relative to one plain decode step.

Measures, on a real prompt context: one decode step of the target (1 token on the cache), one
head forward (block of ``block_size``) plus its lm_head rows, tree construction, and one tree
verify forward at each budget. Medians over repeats, measured side by side in one process.
"""

from __future__ import annotations

import statistics
import time

import torch

from sglang_jetspec.core.head import HeadKVCache
from sglang_jetspec.core.tree import build_tree
from sglang_jetspec.reference.target import HFTarget, keep_cache_rows


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def measure_round_costs(target: HFTarget, head, prompt_ids: list[int], budgets=(8, 32, 64), width: int = 7,
                        repeats: int = 7) -> dict:
    cfg = head.config
    layer_ids = list(cfg.target_layer_ids)
    cache = target.new_cache()
    step = target.forward(torch.tensor(prompt_ids), cache, 0, layer_ids=layer_ids)
    n = len(prompt_ids)
    anchor = int(step.logits[-1].argmax())

    def decode_step():
        target.forward(torch.tensor([anchor]), cache, n)
        keep_cache_rows(cache, n, torch.tensor([], dtype=torch.long))

    head_cache = HeadKVCache(cfg, batch_size=1)
    head.extend_cache(head.project_context(step.features[None]), torch.arange(n)[None], head_cache)
    block = torch.full((cfg.block_size,), cfg.mask_token_id)
    block[0] = anchor
    embeds = target.embed(block)[None]
    empty_ctx = torch.zeros(1, 0, cfg.hidden_size)
    pos = (n + torch.arange(cfg.block_size))[None]
    state = {}

    vocab = head.draft_vocab  # the decoder drafts over it when the head folder has one

    def head_forward(subset=True):
        hidden = head(embeds, pos, empty_ctx, torch.zeros(1, 0, dtype=torch.long), cache=head_cache)
        if vocab is not None and subset:
            state["lp"] = vocab.logprobs(hidden[0, 1:], target.lm_head_weight(), target.vocab_size)
        else:
            state["lp"] = torch.log_softmax(target.lm_head(hidden[0, 1:]), -1)

    res = {"context_tokens": n, "decode_ms": _median_ms(decode_step, repeats), "budgets": {}}
    if vocab is not None:  # side by side: the same forward over the whole vocabulary
        res["head_full_vocab_ms"] = _median_ms(lambda: head_forward(subset=False), repeats)
        res["draft_vocab"] = len(vocab)
    res["head_ms"] = _median_ms(head_forward, repeats)
    for b in budgets:
        tree = build_tree(anchor, state["lp"], b, width)
        res["budgets"][b] = {
            "tree_build_ms": _median_ms(lambda: build_tree(anchor, state["lp"], b, width), repeats),
            "verify_ms": _median_ms(lambda: _verify(target, cache, n, tree, layer_ids), repeats),
            "nodes": tree.n,
        }
    return res


def _verify(target, cache, n, tree, layer_ids):
    """As the reference decoder verifies greedily: the tree forward without the lm_head, then
    the lm_head on the rows the walk visits (here the root only: an untrained head's case)."""
    step = target.forward(tree.tokens, cache, n, layer_ids=layer_ids, tree_mask=tree.ancestor_mask(),
                          depths=tree.depths, logits=False)
    target.lm_head(step.hidden[:1])
    keep_cache_rows(cache, n, torch.tensor([], dtype=torch.long))


def format_round_costs(res: dict) -> str:
    d = res["decode_ms"]
    lines = [f"context {res['context_tokens']} tokens; one decode step {d:.1f} ms",
             f"head forward (+ lm_head rows): {res['head_ms']:.1f} ms = {res['head_ms'] / d:.2f} decode steps"
             + (f" (draft vocabulary of {res['draft_vocab']} tokens; over the whole vocabulary "
                f"{res['head_full_vocab_ms']:.1f} ms)" if "draft_vocab" in res else ""),
             f"{'budget':>6} {'nodes':>5} {'tree build ms':>13} {'verify ms':>9} {'verify/decode':>13} {'round/decode':>12}"]
    for b, r in res["budgets"].items():
        rnd = res["head_ms"] + r["tree_build_ms"] + r["verify_ms"]
        lines.append(f"{b:6d} {r['nodes']:5d} {r['tree_build_ms']:13.2f} {r['verify_ms']:9.1f} "
                     f"{r['verify_ms'] / d:13.2f} {rnd / d:12.2f}")
    return "\n".join(lines)
