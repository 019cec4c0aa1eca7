"""Lossless acceptance for sampled requests where SGLang's verify cannot sample (CPU).

SGLang's `eagle_sample` takes its greedy branch on CPU whatever the request's temperature
(`_verify_uses_greedy(is_cpu=True)`), which silently turns sampling into greedy decoding. For
such batches the worker calls `sample_walk_accept` instead: the walk rule of
core/acceptance.py (at each node draw from the target distribution, follow the child carrying
the draw) is lossless for ANY tree, so every committed token is an exact sample of SGLang's own
sampler distribution (core/sampling.py reproduces it). Greedy rows in the same batch (SGLang
stores them as top_k = 1) get a one-hot distribution, i.e. the greedy walk.

The result uses eagle_sample's layout, so the rest of the round is shared:
  predict [bs*n] int32: at each accepted node, the token committed after it
  accept_index [bs, n] int32: global rows of the accepted path, root first, -1 after
  accept_lens [bs] int32: accepted drafts + 1 (the bonus)
Not handled (phase 1): grammar masks and per-request seeds; penalties and logit_bias are
applied by `adjust_logits` exactly where eagle_sample applies them.
"""

from __future__ import annotations

import torch

from sglang_jetspec.core.acceptance import accept_sampling_walk
from sglang_jetspec.core.sampling import target_distribution
from sglang_jetspec.core.tree import DraftTree


def adjust_logits(logits: torch.Tensor, sampling_info, n: int) -> torch.Tensor:
    """Penalties and logit bias repeated over each request's n rows (a copy; [bs*n, V])."""
    out = logits.float().clone()
    if sampling_info.acc_additive_penalties is not None:
        out += torch.repeat_interleave(sampling_info.acc_additive_penalties, n, dim=0)
    if sampling_info.acc_scaling_penalties is not None:
        from sglang.srt.sampling.penaltylib.repetition_penalty import apply_scaling_penalties

        apply_scaling_penalties(out, torch.repeat_interleave(sampling_info.acc_scaling_penalties, n, dim=0))
    if sampling_info.logit_bias is not None:
        out += torch.repeat_interleave(sampling_info.logit_bias, n, dim=0)
    return out


def sample_walk_accept(trees: list[DraftTree], logits: torch.Tensor, temperatures: list[float],
                       top_ks: list[int], top_ps: list[float], min_ps: list[float],
                       generator: torch.Generator, n: int | None = None):
    """(predict, accept_lens, accept_index) for a batch of trees verified n rows per request
    (logits [bs*n, V]; a tree of k < n nodes owns rows 0..k-1 of its block, the rest are the
    dead padding rows of verify_layout, never accepted). n defaults to the first tree's size."""
    bs = len(trees)
    n = trees[0].n if n is None else n
    if logits.shape[0] != bs * n:
        raise ValueError(f"logits has {logits.shape[0]} rows, expected bs * n = {bs * n}")
    if max(t.n for t in trees) > n:
        raise ValueError(f"tree sizes {[t.n for t in trees]} exceed n = {n}")
    predict = torch.zeros(bs * n, dtype=torch.int32)
    accept_index = torch.full((bs, n), -1, dtype=torch.int32)
    accept_lens = torch.empty(bs, dtype=torch.int32)
    for b, tree in enumerate(trees):
        rows = logits[b * n:b * n + tree.n].float().cpu()  # [k, V]
        top_k = -1 if top_ks[b] >= rows.shape[1] else int(top_ks[b])
        probs = target_distribution(rows, float(temperatures[b]), top_k, float(top_ps[b]),
                                    float(min_ps[b]))
        res = accept_sampling_walk(tree, probs, generator)
        nodes = torch.tensor(res.accepted_nodes)
        predict[b * n + nodes] = torch.tensor(res.tokens, dtype=torch.int32)
        accept_index[b, : len(nodes)] = (b * n + nodes).int()
        accept_lens[b] = len(nodes)
    return predict, accept_lens, accept_index
