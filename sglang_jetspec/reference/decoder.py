"""The JetSpec reference decoder on transformers: the correctness oracle and the CPU path.

One round, for a sequence whose last committed token (the anchor) is not yet in the target's
KV cache:
  1. head forward over [anchor, MASK x (block-1)] with the new context features -> per-depth logits
  2. best-first tree under the node budget (root = anchor)
  3. ONE target forward over all tree nodes under the ancestor mask
  4. accept (greedy, or lossless sampling), keep only the accepted path's KV, and hand the
     accepted nodes' fused hidden states to the head as the next round's context.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from sglang_jetspec.core.acceptance import (accept_greedy, accept_greedy_lazy, accept_sampling_rrs,
                                             accept_sampling_walk)
from sglang_jetspec.core.head import DraftHead, HeadKVCache
from sglang_jetspec.core.packed_linear import pack_linears
from sglang_jetspec.core.sampling import draft_distribution, target_distribution
from sglang_jetspec.core.tree import build_tree, build_tree_from_top, limits_for_remaining, resample_children
from sglang_jetspec.reference.results import GenerationResult, truncate_at_stop
from sglang_jetspec.reference.target import HFTarget, keep_cache_rows


# With the packed lm_head (core/packed_linear.py) a product of up to 16 rows costs about one
# weight read (SmolLM2's lm_head, two threads: 2.3 ms for 1 row, 2.9 for 8, 3.6 for 16), so a
# greedy round scores every node at once rather than one row per visited node.
ALL_ROWS_LM_HEAD_MAX = 16
SAMPLING_RULES = ("rrs", "walk")


@dataclass
class TreeSettings:
    budget: int = 32        # nodes per tree, root included (1 = plain decoding)
    width: int = 7          # top-k per depth
    depth: int | None = None  # max depth; None = block_size - 1
    # temperature > 0: "rrs" redraws each sibling group from the draft (resample_children) and
    # accepts by recursive rejection sampling; "walk" keeps the greedy top-W tree and follows the
    # child the target samples (the rule SGLang's server path uses). Both lossless.
    sampling_rule: str = "rrs"

    def validate(self, block_size: int) -> int:
        if self.sampling_rule not in SAMPLING_RULES:
            raise ValueError(f"sampling rule {self.sampling_rule!r}: expected one of {list(SAMPLING_RULES)}")
        depth = block_size - 1 if self.depth is None else self.depth
        if self.budget < 1:
            raise ValueError(f"budget {self.budget} must be >= 1 (1 = no speculation)")
        if self.width < 1:
            raise ValueError(f"width {self.width} must be >= 1")
        if not 1 <= depth <= block_size - 1:
            raise ValueError(f"depth {depth} must be in [1, block_size - 1 = {block_size - 1}]")
        return depth


class ReferenceDecoder:
    def __init__(self, target: HFTarget, head: DraftHead, tree: TreeSettings):
        cfg = head.config
        cfg.check_target(target.hidden_size, target.num_layers, target.vocab_size)
        if cfg.mask_token_id is None:
            raise ValueError("draft head config has no dflash_config.mask_token_id")
        self.target, self.head, self.tree = target, head.to(target.device).eval(), tree
        if getattr(target, "linear_backend", "torch") == "onednn":
            pack_linears(self.head)  # the head's CPU fp32 layers like the target's (core/packed_linear.py)
        self.depth = tree.validate(cfg.block_size)
        self.layer_ids = list(cfg.target_layer_ids)
        self.vocab = head.draft_vocab  # None: the draft scores the whole vocabulary
        self.prior = getattr(head, "pair_prior", None)  # None: plain best-first trees (core/pair_prior.py)
        # columns of each draft row the tree reads: the width, or the prior's candidate pool
        self.pool = tree.width if self.prior is None else max(tree.width, self.prior.settings.pool)
        if self.vocab is not None:
            errs = self.vocab.check(target.vocab_size, tree.width)
            if errs:
                raise ValueError("; ".join(errs))
            target.lm_head_weight()  # refuses an output head with a bias, here rather than mid-decode

    @torch.no_grad()
    def generate(self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                 top_k: int = -1, top_p: float = 1.0, seed: int = 0) -> GenerationResult:
        t0 = time.perf_counter()
        tgt, eos = self.target, self.target.eos_token_ids()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        sampling = temperature > 0.0

        def pick(logits_row: torch.Tensor) -> int:
            if not sampling:
                return int(logits_row.argmax())
            probs = target_distribution(logits_row[None], temperature, top_k, top_p)[0]
            return int(torch.multinomial(probs.cpu(), 1, generator=gen))

        cache = tgt.new_cache()
        step = tgt.forward(torch.tensor(prompt_ids), cache, 0, layer_ids=self.layer_ids, logits=False)
        anchor = pick(tgt.lm_head(step.hidden[-1:])[0])
        out, stopped = truncate_at_stop([anchor], max_new_tokens, eos)
        head_cache = HeadKVCache(self.head.config, batch_size=1)
        new_feats = step.features                       # [s, K*d] context not yet seen by the head
        feat_pos = torch.arange(len(prompt_ids))        # their positions
        rounds, accepted = 0, []
        while not stopped and len(out) < max_new_tokens:
            prefix_len = len(prompt_ids) + len(out) - 1  # tokens in the target cache
            budget, depth = limits_for_remaining(self.tree.budget, self.depth,
                                                 max_new_tokens - len(out))  # as the server does
            rows = max(1, min(depth, budget - 1))  # a tree of budget B is at most B - 1 deep
            scores, ids = self._draft_scores(anchor, prefix_len, new_feats, feat_pos, head_cache, rows)
            prev = out[-2] if len(out) > 1 else prompt_ids[-1]  # the committed token before the anchor
            if sampling and self.tree.sampling_rule == "rrs":  # the draft distribution over the whole vocabulary
                draft_lp = self._full_width(scores, ids)  # [rows, V]
                if self.prior is None:
                    tree = build_tree(anchor, draft_lp, budget, self.tree.width, min(depth, rows))
                else:  # the prior shapes the tree; the redraw below keeps only its shape
                    vals, cols = draft_lp.topk(min(self.pool, draft_lp.shape[-1]), dim=-1)
                    tree = build_tree_from_top(anchor, vals, cols, budget, self.tree.width, min(depth, rows),
                                               prior=self.prior, prev_token=prev)
                q = draft_distribution(draft_lp, temperature)
                tree = resample_children(tree, q, gen)
            else:  # the tree reads only each row's top-W (or the prior's pool): take it over the scored columns
                vals, cols = scores.topk(min(self.pool, scores.shape[-1]), dim=-1)
                tree = build_tree_from_top(anchor, vals, cols if ids is None else ids[cols], budget,
                                           self.tree.width, min(depth, rows), prior=self.prior, prev_token=prev)
            step = tgt.forward(tree.tokens, cache, prefix_len, layer_ids=self.layer_ids,
                               tree_mask=tree.ancestor_mask(), depths=tree.depths, logits=False)
            if sampling:
                p = target_distribution(tgt.lm_head(step.hidden), temperature, top_k, top_p)
                res = (accept_sampling_rrs(tree, p, q, gen) if self.tree.sampling_rule == "rrs"
                       else accept_sampling_walk(tree, p, gen))
            elif tgt.linear_backend == "onednn" and tree.n <= ALL_ROWS_LM_HEAD_MAX:
                res = accept_greedy(tree, tgt.lm_head(step.hidden))  # every row in one weight read
            else:  # lm_head only on the nodes the walk visits (row by row, each a full weight read)
                res = accept_greedy_lazy(tree, lambda i: tgt.lm_head(step.hidden[i : i + 1])[0])
            path = torch.tensor(res.accepted_nodes)
            keep_cache_rows(cache, prefix_len, path)
            new_feats = step.features[path]
            feat_pos = prefix_len + torch.arange(len(path))
            committed, stopped = truncate_at_stop(res.tokens, max_new_tokens - len(out), eos)
            out += committed
            anchor = res.bonus_token
            rounds += 1
            accepted.append(len(committed))
        return GenerationResult(
            output_ids=out, rounds=rounds, accepted=accepted, seconds=time.perf_counter() - t0,
            finish_reason="stop" if stopped else "length",
        )

    def _draft(self, anchor: int, anchor_pos: int, feats: torch.Tensor, feat_pos: torch.Tensor,
               head_cache: HeadKVCache, rows: int | None = None) -> torch.Tensor:
        """Draft log-probs [rows, V] of depths 1..rows (default: all), -inf outside a draft
        vocabulary; see _draft_scores."""
        return self._full_width(*self._draft_scores(anchor, anchor_pos, feats, feat_pos, head_cache, rows))

    def _full_width(self, scores: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        if ids is None:
            return scores
        out = torch.full((scores.shape[0], self.target.vocab_size), float("-inf"))
        out[:, ids] = scores
        return out

    def _draft_scores(self, anchor: int, anchor_pos: int, feats: torch.Tensor, feat_pos: torch.Tensor,
                      head_cache: HeadKVCache, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One head forward: draft log-probs [rows, n] of depths 1..rows (default: all) over the
        scored tokens, and their ids [n] (None: n is the whole vocabulary, column = token id).
        A causal head runs only rows + 1 block positions (slot i never sees later slots); the
        head still takes in the new context, so a round that needs no draft keeps its cache current."""
        cfg, dev = self.head.config, self.target.device
        rows = self.depth if rows is None else rows
        if self.tree.budget == 1:  # plain decoding: the tree is the root alone, no head needed
            return torch.zeros(rows, self.target.vocab_size), None
        s = rows + 1 if cfg.causal_head else cfg.block_size
        block = torch.full((s,), cfg.mask_token_id, device=dev)
        block[0] = anchor
        embeds = self.target.embed(block)[None]
        ctx = self.head.project_context(feats[None].to(embeds.dtype))
        hidden = self.head(
            embeds, (anchor_pos + torch.arange(s, device=dev))[None], ctx,
            feat_pos.to(dev)[None], cache=head_cache,
        )
        rows_h = hidden[0, 1 : 1 + rows]  # slot i predicts depth i
        if self.vocab is not None:
            sub = self.vocab.subset_logprobs(rows_h, self.target.lm_head_weight()).cpu()
            return sub, self.vocab.token_ids
        return torch.log_softmax(self.target.lm_head(rows_h), dim=-1).cpu(), None
