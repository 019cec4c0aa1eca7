"""Lossless acceptance for sampled requests where SGLang's verify cannot sample (CPU).

SGLang's `eagle_sample` takes its greedy branch on CPU whatever the request's temperature
(`_verify_uses_greedy(is_cpu=True)`), which silently turns sampling into greedy decoding. For
such batches the worker samples on the host, by one of two rules of core/acceptance.py, each
making every committed token an exact sample of SGLang's own sampler distribution
(core/sampling.py reproduces it):

- "rrs" (the default, SGLANG_JETSPEC_SAMPLING_RULE): the tree keeps its best-first shape but each
  sibling group is redrawn without replacement from the draft distribution q at the request's
  temperature (`redraw_trees`), and each node accepts one of its children by recursive rejection
  sampling against q. Accepts more than "walk" at temperature ~1 (the head's README).
- "walk": the greedy best-first tree as drafted; at each node draw from the target distribution
  and follow the child carrying the draw. Lossless for ANY tree.

Greedy rows in the same batch (SGLang stores them as top_k = 1) keep the greedy tree and get a
one-hot distribution, i.e. the greedy walk.

The result uses eagle_sample's layout, so the rest of the round is shared:
  predict [bs*n] int32: at each accepted node, the token committed after it
  accept_index [bs, n] int32: global rows of the accepted path, root first, -1 after
  accept_lens [bs] int32: accepted drafts + 1 (the bonus)
Not handled: per-request seeds (SGLang honours them only with --enable-deterministic-inference);
penalties and logit_bias are applied by `adjust_logits` exactly where eagle_sample applies them,
grammar masks by the worker before the draws.
"""

from __future__ import annotations

import os

import torch

from sglang_jetspec.core.acceptance import accept_sampling_rrs, accept_sampling_walk
from sglang_jetspec.core.sampling import target_distribution
from sglang_jetspec.core.tree import DraftTree, resample_children, resample_problem
from sglang_jetspec.integration.env_setting import env_choice

ENV = "SGLANG_JETSPEC_SAMPLING_RULE"
RULES = ("rrs", "walk")


def rule_from_env(environ=os.environ) -> str:
    return env_choice(environ, ENV, RULES)


def is_sampled(top_k: int) -> bool:
    """SGLang stores a greedy request as top_k = 1 (whatever its temperature field says)."""
    return int(top_k) != 1


def draft_q(scores: torch.Tensor, col_ids: torch.Tensor | None, temperature: float,
            vocab: int) -> torch.Tensor:
    """The draft distribution q [rows, vocab] at `temperature` from draft log-probs over the
    scored columns (Drafter.draft_scores: scores [rows, C], col_ids [C] or None = the first C
    tokens); zero outside the columns. vocab may exceed C (padded logits) but not fall short."""
    if temperature <= 0:
        raise ValueError(f"temperature {temperature} must be > 0 for a draft distribution")
    c = scores.shape[-1]
    if c > vocab or (col_ids is not None and int(col_ids.max()) >= vocab):
        raise ValueError(f"draft scores cover {c} columns (largest id "
                         f"{c - 1 if col_ids is None else int(col_ids.max())}), beyond vocab {vocab}")
    probs = torch.softmax(scores.float() / temperature, dim=-1)
    q = torch.zeros(scores.shape[0], vocab, dtype=torch.float32, device=scores.device)
    if col_ids is None:
        q[:, :c] = probs
    else:
        q[:, col_ids.to(scores.device)] = probs
    return q


def redraw_trees(trees: list[DraftTree], draft_qs: list[torch.Tensor | None],
                 generator: torch.Generator) -> tuple[list[DraftTree], list[torch.Tensor | None]]:
    """The trees rrs verifies: for each tree with a q [D, V], the same shape with every sibling
    group a fresh draw without replacement from q's row at its depth (core/tree.py
    resample_children; groups drawn in tree order from one generator). A tree some group of
    which is wider than q's support there (a tiny draft vocabulary) keeps its tokens and gets
    q None, i.e. the walk rule; that choice reads only the shape and q, never a draw, so both
    rules stay lossless. Returns (trees, the q each is to be accepted with)."""
    if len(draft_qs) != len(trees):
        raise ValueError(f"{len(draft_qs)} draft distributions for {len(trees)} trees")
    out_trees, out_qs = [], []
    for tree, q in zip(trees, draft_qs):
        if q is None or resample_problem(tree, q) is not None:
            out_trees.append(tree)
            out_qs.append(None)
        else:
            out_trees.append(resample_children(tree, q, generator))
            out_qs.append(q)
    return out_trees, out_qs


class LazyTargetRows:
    """The target distribution of a tree's rows [k, V], each computed when the acceptance first
    reads it (a walk reads at most depth + 1 of k rows; the softmax, and the sort of top-p, over
    the whole vocabulary is most of a sampled round's host time). Stands in for the [k, V]
    tensor core/acceptance.py indexes: `shape`, `dim()` and `rows[i]`."""

    def __init__(self, logits: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float):
        self.logits, self.shape = logits, logits.shape
        self._args = (temperature, top_k, top_p, min_p)
        self._rows: dict[int, torch.Tensor] = {}

    def dim(self) -> int:
        return 2

    def __getitem__(self, i: int) -> torch.Tensor:
        i = int(i)
        if i not in self._rows:
            self._rows[i] = target_distribution(self.logits[i:i + 1].float(), *self._args)[0]
        return self._rows[i]


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


def sample_accept(trees: list[DraftTree], logits: torch.Tensor, temperatures: list[float],
                  top_ks: list[int], top_ps: list[float], min_ps: list[float],
                  generator: torch.Generator, n: int | None = None,
                  draft_qs: list[torch.Tensor | None] | None = None):
    """(predict, accept_lens, accept_index) for a batch of trees verified n rows per request
    (logits [bs*n, V]; a tree of k < n nodes owns rows 0..k-1 of its block, the rest are the
    dead padding rows of verify_layout, never accepted). n defaults to the first tree's size.
    draft_qs[b]: the q [D, V] tree b was redrawn from (`redraw_trees`): accepted by recursive
    rejection sampling; None (or draft_qs None): the walk rule, valid for any tree."""
    bs = len(trees)
    n = trees[0].n if n is None else n
    if logits.shape[0] != bs * n:
        raise ValueError(f"logits has {logits.shape[0]} rows, expected bs * n = {bs * n}")
    if max(t.n for t in trees) > n:
        raise ValueError(f"tree sizes {[t.n for t in trees]} exceed n = {n}")
    if draft_qs is not None and len(draft_qs) != bs:
        raise ValueError(f"{len(draft_qs)} draft distributions for {bs} trees")
    predict = torch.zeros(bs * n, dtype=torch.int32)
    accept_index = torch.full((bs, n), -1, dtype=torch.int32)
    accept_lens = torch.empty(bs, dtype=torch.int32)
    for b, tree in enumerate(trees):
        rows = logits[b * n:b * n + tree.n].cpu()  # [k, V]
        top_k = -1 if top_ks[b] >= rows.shape[1] else int(top_ks[b])
        probs = LazyTargetRows(rows, float(temperatures[b]), top_k, float(top_ps[b]), float(min_ps[b]))
        q = None if draft_qs is None else draft_qs[b]
        if q is None:
            res = accept_sampling_walk(tree, probs, generator)
        else:
            q = q.float().cpu()
            if q.shape[1] > probs.shape[1]:
                raise ValueError(f"draft q of request {b} covers {q.shape[1]} tokens, the logits {probs.shape[1]}")
            if q.shape[1] < probs.shape[1]:  # padded logits: the draft never proposes the padding
                q = torch.nn.functional.pad(q, (0, probs.shape[1] - q.shape[1]))
            res = accept_sampling_rrs(tree, probs, q, generator)
        nodes = torch.tensor(res.accepted_nodes)
        predict[b * n + nodes] = torch.tensor(res.tokens, dtype=torch.int32)
        accept_index[b, : len(nodes)] = (b * n + nodes).int()
        accept_lens[b] = len(nodes)
    return predict, accept_lens, accept_index
