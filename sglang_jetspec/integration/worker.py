"""The JETSPEC speculative worker (SGLang V2 worker contract, synchronous loop).

Per scheduler step, one of:
  extend  target prefill with the head's target layers captured; their fused hidden states
          become the head's context K/V at the prompt tokens' KV slots (head_pool.py).
  decode  one round, the same as the reference decoder's (reference/decoder.py):
          1. head forward over [anchor, MASK...] -> per-depth log-probs     (drafter.py)
          2. best-first tree under the node budget                          (core/tree.py)
          3. ONE target TARGET_VERIFY forward over every node, tree mask   (core/verify_layout.py)
          4. greedy walk (SGLang's eagle_sample), compaction of the accepted path's KV,
             and the accepted nodes' fused hidden states stored as head context.

The anchor is the last committed token (req.output_ids[-1]): in the synchronous loop the
scheduler commits each round's tokens before the next round is prepared. Nothing else is
carried between rounds, so merge/filter of batches needs no JetSpec state.

Sampled requests on CPU: SGLang's verify is greedy-only there, so such batches are accepted
by the lossless walk rule of sampling_accept.py instead. Grammar-constrained requests (regex,
JSON schema, EBNF): SGLang's own tree traversal (build_grammar_vocab_mask, as NGRAM uses it)
masks the target's logits at every node before acceptance, so a constrained request commits
exactly what the constrained plain server would. Limits: tp = pp = dp = 1, page size 1, no
overlap scheduling, no CUDA graphs.
"""

from __future__ import annotations

import logging
import os
import time

import torch

from sglang.kernels.ops.speculative.cache_locs import assign_extend_cache_locs_func
from sglang.srt.layers.logprob_processor import compute_spec_logprobs
from sglang.srt.managers.utils import GenerationBatchResult
from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode
from sglang.srt.runtime_context import get_spec
from sglang.srt.speculative.base_spec_worker import BaseSpecWorker
from sglang.srt.speculative.eagle_utils import eagle_sample
from sglang.srt.speculative.ngram_info import NgramVerifyInput
from sglang.srt.state_capturer.routed_experts import get_global_experts_capturer
from sglang.srt.speculative.spec_utils import (
    GrammarTree,
    build_grammar_vocab_mask,
    move_accept_tokens_to_target_kvcache,
)

from sglang_jetspec.core.budget_controller import tree_prefix
from sglang_jetspec.core.checkpoint import load_head
from sglang_jetspec.core.draft_vocab import FILE_NAME as DRAFT_VOCAB_FILE
from sglang_jetspec.core.tree import build_trees_from_top, node_draft_logprobs
from sglang_jetspec.core.tree_native import prepare as prepare_native
from sglang_jetspec.core.verify_layout import full_custom_mask, to_verify_layout
from sglang_jetspec.integration import kv_reserve
from sglang_jetspec.integration.budget_policy import BudgetPolicy, mode_from_env
from sglang_jetspec.integration.draft_vocab_setting import mode_from_env as draft_vocab_mode
from sglang_jetspec.integration.pair_prior_setting import mode_from_env as pair_prior_mode
from sglang_jetspec.integration.expert_schedule import TRACE_ENV as EXPERT_TRACE_ENV
from sglang_jetspec.integration.expert_schedule import ExpertScheduler, moe_shape
from sglang_jetspec.integration.expert_schedule import hold_knob_from_env as expert_hold_knob_from_env
from sglang_jetspec.integration.expert_schedule import loss_from_env as expert_loss_from_env
from sglang_jetspec.integration.expert_schedule import mode_from_env as expert_mode_from_env
from sglang_jetspec.integration.drafter import Drafter, top_of
from sglang_jetspec.integration.head_pool import HeadContextPool, context_slot_table
from sglang_jetspec.integration.metrics import maybe_metrics
from sglang_jetspec.integration.sampling_accept import (adjust_logits, draft_q, is_sampled, redraw_trees,
                                                        rule_from_env, sample_accept)
from sglang_jetspec.integration.request_settings import cap_to_remaining, needs_plain_step, resolve_tree
from sglang_jetspec.integration.round_stats import RoundStats
from sglang_jetspec.integration.server_args import TargetDims, TreeSettings, check_head

logger = logging.getLogger(__name__)
LOG_EVERY_ROUNDS = 200  # one budget/acceptance line in SGLang's log per this many decode rounds


def enable_hidden_capture(model, layer_ids: list[int]) -> None:
    """Make the target return the outputs of `layer_ids`, packed [tokens, K*d], whenever a
    forward runs with CaptureHiddenMode.FULL (SGLang's DFLASH capture hook)."""
    for hook in ("set_dflash_layers_to_capture", "set_eagle3_layers_to_capture"):
        if hasattr(model, hook):
            getattr(model, hook)(list(layer_ids))
            return
    raise ValueError(f"target model {type(model).__name__} has no hidden-state capture hook "
                     "(set_dflash_layers_to_capture); JETSPEC cannot read its layers")


class JetSpecWorker(BaseSpecWorker):
    def __init__(self, server_args, gpu_id: int, nccl_port: int, target_worker):
        super().__init__()
        self.server_args = server_args
        self._target_worker = target_worker
        self._draft_worker = None  # the head is not a model runner: no draft KV, no graphs
        self.model_runner = target_worker.model_runner
        self.device = self.model_runner.device
        spec = get_spec()
        self.budget = spec.speculative_num_draft_tokens
        self.width = spec.speculative_eagle_topk
        self.depth = spec.speculative_num_steps
        self.speculative_num_draft_tokens = self.budget

        dtype = self.model_runner.model_config.dtype
        head = load_head(spec.speculative_draft_model_path, device=self.device, dtype=dtype,
                         draft_vocab=draft_vocab_mode() == "on", pair_prior=pair_prior_mode() == "on")
        # n-gram prior the trees choose children with (core/pair_prior.py); None: plain trees
        self.prior = head.pair_prior
        text_cfg = self.model_runner.model_config.hf_text_config
        errs = check_head(head.config, TargetDims(
            text_cfg.hidden_size, text_cfg.num_hidden_layers, text_cfg.vocab_size))
        if errs:
            raise ValueError("JETSPEC head does not fit the target: " + "; ".join(errs))
        model = self.model_runner.model
        enable_hidden_capture(model, head.config.target_layer_ids)
        embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") \
            else model.model.embed_tokens
        self.drafter = Drafter(head, embed.weight, model.lm_head.weight,
                               text_cfg.vocab_size, self.depth)
        self.head_pool: HeadContextPool | None = None
        # eagle_sample cannot sample on CPU; sampled batches are accepted on the host by
        # SGLANG_JETSPEC_SAMPLING_RULE (rrs | walk, sampling_accept.py)
        self.host_sampling = str(self.device).startswith("cpu")
        self.sampling_rule = rule_from_env()
        self.generator = torch.Generator().manual_seed(int(server_args.random_seed or 0))
        self.stats = RoundStats(self.device)  # read through /get_server_info (hooks.py)
        self.policy = BudgetPolicy(self.budget, mode_from_env(), seed=int(server_args.random_seed or 0),
                                   draft_depth=self.depth)
        self.stats.attach("budget", self.policy.snapshot)
        # SGLang's per-step KV reserve follows the adaptive width (kv_reserve.py)
        self.reserve_follows = self.policy.adaptive and kv_reserve.mode_from_env() == "follow"
        kv_reserve.set_width(None)
        self.experts: ExpertScheduler | None = None  # MoE targets: set in alloc_memory_pool
        self._gap: float | None = None  # mean scheduler time between decode rounds (_track_gap)
        self._round_end: float | None = None  # when the last decode round returned
        self._after_extend = False  # a prefill ran since then
        self._text_cfg = text_cfg
        self.metrics = maybe_metrics(server_args)  # Prometheus gauges with --enable-metrics
        logger.info("JETSPEC verify width: %s (max %d)", self.policy.mode, self.budget)
        if self.host_sampling:
            logger.info("JETSPEC sampled requests: %s rule on the host", self.sampling_rule)
        vocab = head.draft_vocab
        logger.info("JETSPEC draft vocabulary: %s", "the target's full vocabulary" if vocab is None
                    else f"{len(vocab)} of {text_cfg.vocab_size} tokens ({DRAFT_VOCAB_FILE})")
        # compile (once) and load the native tree builder now, so that no request waits for it
        builder = prepare_native(self.prior)
        logger.info("JETSPEC tree prior: %s; trees built by %s", "none (plain best-first trees)" if self.prior is None
                    else f"{len(self.prior)} bigrams, {self.prior.trigram.shape[0]} trigrams, {self.prior.settings}",
                    builder)

    def _expert_scheduler(self, text_cfg, server_args) -> ExpertScheduler | None:
        """Expert-aware pruning (expert_schedule.py) when the target is MoE and SGLang captures
        the routed experts; None for dense targets."""
        shape = moe_shape(text_cfg)
        if shape is None:
            return None
        capturer = get_global_experts_capturer()
        if capturer is None:
            logger.warning("JETSPEC: MoE target without --enable-return-routed-experts capture: "
                           "expert-aware tree scheduling is off")
            return None
        # SGLang sizes the capture buffer for prefill chunks / running requests, not for verify
        # rows (its own FIXME); a verify of max_running_requests x budget rows must fit
        buf = capturer.device_cache.buffer
        rows = int(server_args.max_running_requests or 1) * self.budget
        if buf.shape[0] < rows:
            capturer.device_cache.buffer = torch.zeros((rows, *buf.shape[1:]), dtype=buf.dtype,
                                                       device=buf.device)
        self._capturer = capturer
        sched = ExpertScheduler(*shape, prune=expert_mode_from_env() == "on",
                                trace_path=os.environ.get(EXPERT_TRACE_ENV) or None, gate=True,
                                hold_loss=expert_loss_from_env(), prior=self.prior,
                                hold_knob=expert_hold_knob_from_env())
        self.stats.attach("experts", sched.snapshot)
        logger.info("JETSPEC expert-aware tree scheduling: %s (%d layers x %d experts, top-%d; node acceptance "
                    "from sibling rank and score step%s)",
                    f"on, giving up at most {sched.hold.target:.1%} of the accepted length (held by {sched.hold_knob})"
                    if sched.prune
                    else "off (measuring only)", *shape,
                    ", split on the n-gram prior's log-prob" if sched.prior is not None else "")
        return sched

    def _routed_experts(self, rows: int) -> torch.Tensor:
        """[rows, L, K] experts the last forward routed its first `rows` tokens to (host copy)."""
        return self._capturer.device_cache.buffer[:rows, :, : self._capturer.topk_size].cpu()

    # ---- setup (called by the scheduler after the target pools exist) ----------------------

    def alloc_memory_pool(self, memory_pool_config=None, req_to_token_pool=None,
                          token_to_kv_pool_allocator=None, **kwargs):
        self.req_to_token_pool, self.token_to_kv_pool_allocator = self._target_worker.get_memory_pool()
        kv = self.token_to_kv_pool_allocator.get_kvcache()
        num_slots = kv.get_key_buffer(0).shape[0]  # pool size + padding rows, as the target's
        cfg = self.drafter.cfg
        self.head_pool = HeadContextPool(cfg.num_hidden_layers, num_slots, cfg.num_key_value_heads,
                                         cfg.head_dim, self.device, self.drafter.embed_weight.dtype)
        from sglang_jetspec.integration.hooks import head_pool_budget

        budget = dict(head_pool_budget, slots=num_slots, mb=round(self.head_pool.nbytes() / 2**20, 3))
        self.stats.attach("head_pool", lambda: dict(budget))
        logger.info("JETSPEC head context pool: %d slots, %.1f MB (%s SGLang's KV pool sizing)", num_slots,
                    budget["mb"], "budgeted in" if budget["budgeted"] else "NOT budgeted in")
        # the routed-experts capturer exists once the target's pools do
        self.experts = self._expert_scheduler(self._text_cfg, self.server_args)

    # ---- one scheduler step -------------------------------------------------------------

    def forward_batch_generation(self, batch, on_publish=None, grammar_barrier=None,
                                 pp_proxy_tensors=None) -> GenerationBatchResult:
        if batch.forward_mode.is_decode():
            return self._verify_round(batch, on_publish, grammar_barrier)
        if not batch.forward_mode.is_extend():
            raise NotImplementedError(f"JETSPEC cannot run forward mode {batch.forward_mode}")
        return self._extend(batch, on_publish)

    def _extend(self, batch, on_publish) -> GenerationBatchResult:
        self._after_extend = True  # the next decode round's gap includes this prefill: not overhead
        result = self._target_worker.forward_batch_generation(
            batch, capture_hidden_mode=CaptureHiddenMode.FULL)
        prefix, extend = list(batch.prefix_lens), list(batch.extend_lens)
        positions = torch.cat([torch.arange(p, p + e) for p, e in zip(prefix, extend)])
        self._store_context(batch.out_cache_loc, result.logits_output.hidden_states, positions)
        if self.experts is not None:  # the prompt's routing teaches the expert predictor too
            self.experts.learn_prefill(batch.input_ids, self._routed_experts(int(batch.input_ids.shape[0])),
                                       extend)

        bs, n = len(batch.reqs), self.budget
        first = result.next_token_ids
        accept_tokens = torch.zeros(bs, n, dtype=first.dtype, device=first.device)
        accept_tokens[:, 0] = first
        accept_lens = torch.ones(bs, dtype=torch.int32, device=first.device)
        if on_publish is not None:
            on_publish(batch.seq_lens)
        result.accept_lens = accept_lens
        result.new_seq_lens = batch.seq_lens
        result.next_draft_input = NgramVerifyInput(
            draft_token_num=n, new_seq_lens=batch.seq_lens,
            accept_tokens=accept_tokens.flatten(), accept_lens=accept_lens)
        result.speculative_num_draft_tokens = n
        return result

    def _verify_round(self, batch, on_publish, grammar_barrier=None) -> GenerationBatchResult:
        t_round = time.perf_counter()
        self._track_gap(t_round)
        bs = len(batch.reqs)
        seq_lens_cpu = batch.seq_lens_cpu if batch.seq_lens_cpu is not None else batch.seq_lens.cpu()
        prefix = [int(x) for x in seq_lens_cpu.tolist()]  # tokens already in the target KV
        anchors = torch.tensor([int(req.output_ids[-1]) for req in batch.reqs])

        stats = self.stats
        # 1-2. draft and build the trees
        # this step's width (budget_policy.py), decided before drafting so a small one also
        # saves head rows; each request's tree is its best-first tree of budget <= the width
        width = self.policy.plan(bs, self._kv_free(batch) if self.policy.adaptive else None)
        full = self._tree_settings(batch.reqs)
        settings = [TreeSettings(min(t.budget, width), t.width, t.depth) for t in full]
        # depth rows the batch's trees can reach: a tree of budget B is at most B - 1 deep; a
        # curve probe (budget_policy.py) drafts the rows of the full budgets and builds those
        # trees for the policy, then verifies their best-first prefixes of this width
        probe = self.policy.probe
        rows = max(min(t.depth, t.budget - 1) for t in (full if probe else settings))
        # sampled requests under the rrs rule redraw their trees from the draft distribution
        info = batch.sampling_info
        rrs = ([is_sampled(k) for k in info.top_ks.tolist()]  # no host read of top_ks otherwise
               if self.host_sampling and self.sampling_rule == "rrs" and not info.is_all_greedy
               else [False] * bs)
        scores = cols = None
        with stats.phase("draft"):
            if rows >= 1:
                t_draft = time.perf_counter()
                slots, valid = context_slot_table(self.req_to_token_pool.req_to_token,
                                                  batch.req_pool_indices, prefix)
                # each row's top-W table is all a tree reads: [bs, rows, W] crosses to the host
                top_w = max(t.width for t in (full if probe else settings))
                if self.prior is not None:  # the candidates the prior chooses each node's children from
                    top_w = max(top_w, self.prior.settings.pool)
                scores, cols = self.drafter.draft_scores(anchors, torch.tensor(prefix),
                                                         self.head_pool.gather(slots), valid, rows)
                top_vals, top_ids = top_of(scores, cols, top_w)
                top_vals, top_ids = top_vals.cpu(), top_ids.cpu()
                self.policy.note_draft(bs, rows, time.perf_counter() - t_draft)
            else:  # every tree is its root alone: plain decoding, no head forward (no probe)
                top_vals, top_ids = torch.zeros(bs, 1, 1), torch.zeros(bs, 1, 1, dtype=torch.long)
                rows, probe = 1, False
        dev = self.device
        # the committed token before each anchor (the prior's context of the root; the expert predictor's)
        prev = [int(r.output_ids[-2]) if len(r.output_ids) > 1 else int(r.origin_input_ids[-1]) for r in batch.reqs]
        with stats.phase("tree"):
            built = full if probe else settings
            trees = build_trees_from_top(anchors.tolist(), top_vals, top_ids, [t.budget for t in built],
                                         [t.width for t in built], [min(t.depth, rows) for t in built],
                                         prior=self.prior, prev_tokens=prev)
            probe_trees = trees if probe else None
            if probe:  # verify the prefix of this width: the tree its budget builds
                trees = [tree_prefix(p, min(p.n, t.budget)) for p, t in zip(probe_trees, settings)]
            if self.experts is not None:  # MoE: keep the nodes worth their expert reads
                logps = ([node_draft_logprobs(t, top_vals[b], top_ids[b]) for b, t in enumerate(trees)]
                         if self.experts.wants_draft_logprobs else None)
                trees = self.experts.schedule(trees, prev, logps)
            draft_qs = None
            if scores is not None and any(rrs):  # after scheduling: it reads the greedy tokens
                temps = info.temperatures.view(-1).tolist()
                vocab = self._text_cfg.vocab_size
                # q rows of the depths that have children (a root-only tree needs none)
                deep = [int(t.depths.max()) for t in trees]
                draft_qs = [draft_q(scores[b, :deep[b]].cpu(), cols, temps[b], vocab)
                            if rrs[b] and deep[b] > 0 else None for b in range(bs)]
                trees, draft_qs = redraw_trees(trees, draft_qs, self.generator)
            # verify width of this batch: its largest tree (<= the server budget the KV reserve
            # was sized for); smaller trees get dead padding rows. The scheduler reads the row
            # stride from the result, so n may change from step to step.
            n = max(t.n for t in trees)
            layout = to_verify_layout(trees, prefix, n=n)
            verify_input = NgramVerifyInput(
                draft_token=layout.draft_tokens.to(dev),
                custom_mask=full_custom_mask(layout, prefix).to(dev),
                positions=layout.positions.to(dev),
                retrieve_index=layout.retrieve_index.to(dev),
                retrieve_next_token=layout.retrieve_next_token.to(dev),
                retrieve_next_sibling=layout.retrieve_next_sibling.to(dev),
                draft_token_num=n,
            )
            verify_input.capture_hidden_mode = CaptureHiddenMode.FULL

        # 3. one target forward over all nodes (the scheduler restores these batch fields)
        with stats.phase("verify"):
            t_verify = time.perf_counter()
            batch.forward_mode = ForwardMode.TARGET_VERIFY
            batch.input_ids = verify_input.draft_token
            batch.out_cache_loc = assign_extend_cache_locs_func(
                req_pool_indices=batch.req_pool_indices,
                req_to_token=self.req_to_token_pool.req_to_token,
                start_offset=batch.seq_lens, end_offset=batch.seq_lens + n,
                batch_size=bs, draft_token_num=n, device=dev)
            batch.spec_info = verify_input
            result = self._target_worker.forward_batch_generation(
                batch, is_verify=True, capture_hidden_mode=CaptureHiddenMode.FULL)
            logits_output = result.logits_output
            t_verify = time.perf_counter() - t_verify

        # 4. accept (under the grammar masks of constrained requests), compact the KV, keep the
        #    accepted nodes as head context
        with stats.phase("accept"):
            grammar_mask = None
            if batch.has_grammar:
                grammar_mask = build_grammar_vocab_mask(
                    reqs=batch.reqs,
                    tree=GrammarTree.from_host(layout.retrieve_next_token, layout.retrieve_next_sibling,
                                               layout.draft_tokens.view(bs, n)),
                    sampling_info=batch.sampling_info, device=dev, barrier=grammar_barrier)
            predict, accept_lens, accept_index = self._accept(trees, verify_input, batch,
                                                              logits_output, n, grammar_mask, draft_qs)
            new_seq_lens = batch.seq_lens + accept_lens
            accept_tokens = predict[accept_index]  # [bs, n]; columns >= accept_lens are junk
            if n > 1:  # at width 1 the one accepted row already sits in its final slot
                move_accept_tokens_to_target_kvcache(batch, accept_index, accept_lens - 1,
                                                     self.token_to_kv_pool_allocator)
            self._store_accepted_context(batch, accept_index, accept_lens,
                                         logits_output.hidden_states, n)
            if batch.return_logprob:
                compute_spec_logprobs(batch, logits_output, predict, accept_index=accept_index)
        lens = accept_lens.tolist()  # host sync (small)
        sizes = [t.n for t in trees]
        stats.add_round(sizes, lens, n)
        if self.policy.adaptive or self.experts is not None:
            rows_idx = accept_index.cpu()
            paths = [(rows_idx[b, :lens[b]] - b * n).tolist() for b in range(bs)]
            # the bonus token labels the children of the path's end (valid for greedy and the
            # host walk rule; a redrawn (rrs) tree and SGLang's GPU tree sampling draw the bonus
            # differently)
            greedy_labels = self.host_sampling or batch.sampling_info.is_all_greedy
            flat_tokens = accept_tokens.cpu()
            bonus = [int(flat_tokens[b, lens[b] - 1])
                     if greedy_labels and (draft_qs is None or draft_qs[b] is None) else None
                     for b in range(bs)]
            if self.experts is not None:
                self.experts.observe(trees, n, self._routed_experts(bs * n), paths, bonus, t_verify)
            if self.policy.adaptive:  # a step costs its round plus the scheduler's time around it
                self.policy.observe(trees, [t.budget for t in settings], paths, bonus,
                                    time.perf_counter() - t_round + (self._gap or 0.0),
                                    probe_trees, [t.budget for t in full] if probe else None)
        if self.metrics is not None:
            self.metrics.update(width, sizes, lens, stats.rounds, self.policy.calibration_error())
        if self.reserve_follows:  # read by SGLang's next check_decode_mem / prepare_for_decode
            kv_reserve.set_width(self.policy.publish_reserve())
        if self.policy.rounds % LOG_EVERY_ROUNDS == 0:
            logger.info("JETSPEC %s", self.policy.summary(stats))
        if on_publish is not None:
            on_publish(new_seq_lens)
        batch.forward_mode = ForwardMode.DECODE
        self._round_end = time.perf_counter()

        flat = accept_tokens.flatten()
        return GenerationBatchResult(
            logits_output=logits_output,
            next_token_ids=flat,
            can_run_cuda_graph=result.can_run_cuda_graph,
            accept_lens=accept_lens,
            new_seq_lens=new_seq_lens,
            next_draft_input=NgramVerifyInput(draft_token_num=n, new_seq_lens=new_seq_lens,
                                              accept_tokens=flat, accept_lens=accept_lens),
            speculative_num_draft_tokens=n,
        )

    def _track_gap(self, now: float) -> None:
        """Running mean of the time between one decode round's end and the next one's start
        (the scheduler's result processing, streaming, batch preparation): it is paid once per
        round whatever the width, so the width policy must count it, or one-token rounds look
        cheaper per token than they are. Gaps with a prefill in between are skipped."""
        end, self._round_end = self._round_end, None
        after_extend, self._after_extend = self._after_extend, False
        if end is None or after_extend:
            return
        gap = now - end
        self._gap = gap if self._gap is None else self._gap + 0.1 * (gap - self._gap)

    def _kv_free(self, batch) -> int | None:
        """Free KV slots plus what the radix cache could evict: the cache-pressure signal."""
        alloc = getattr(batch, "token_to_kv_pool_allocator", None) or self.token_to_kv_pool_allocator
        try:
            free = int(alloc.available_size())
            cache = getattr(batch, "tree_cache", None)
            if cache is not None:
                free += int(cache.evictable_size())
        except (AttributeError, TypeError):
            return None
        return free

    def _tree_settings(self, reqs) -> list[TreeSettings]:
        """Each request's tree settings this round (request_settings.py): the server's
        budget/width/depth unless the request lowers them, budget 1 while a penalty or
        min_new_tokens would make a tree inexact, and never deeper than the tokens it may still
        emit. Smaller trees are padded with dead rows by to_verify_layout, so acceptance is that
        of the request's own tree."""
        server = TreeSettings(self.budget, self.width, self.depth)
        out = []
        for req in reqs:
            sp = req.sampling_params
            t = resolve_tree(getattr(sp, "custom_params", None), server)
            if needs_plain_step(sp, len(req.output_ids)):  # penalties: no lossless tree (request_settings.py)
                t = TreeSettings(1, t.width, t.depth)
            max_new = getattr(sp, "max_new_tokens", None)
            out.append(cap_to_remaining(t, None if max_new is None else max_new - len(req.output_ids)))
        return out

    # ---- head context --------------------------------------------------------------------

    def _store_context(self, slots: torch.Tensor, features: torch.Tensor,
                       positions: torch.Tensor) -> None:
        """Head context K/V of tokens now in the target KV: slots [t], features [t, K*d]."""
        if features is None or features.shape[0] != slots.shape[0]:
            got = None if features is None else tuple(features.shape)
            raise RuntimeError(f"captured target hidden states {got} do not cover the "
                               f"{slots.shape[0]} tokens written to the KV cache")
        self.head_pool.write(slots, self.drafter.context_kv(features, positions))

    def _store_accepted_context(self, batch, accept_index, accept_lens, features, n: int) -> None:
        """After compaction, accepted node j of request b sits in the j-th slot of its verify
        window (position seq_len + j): store its features' K/V there. n = this round's width."""
        bs = len(batch.reqs)
        cols = torch.arange(n, device=accept_index.device)
        keep = cols[None, :] < accept_lens[:, None].to(cols.device)  # [bs, n], a prefix per row
        rows = accept_index[keep].long()  # global node rows into the verify batch
        slots = batch.out_cache_loc.view(bs, n)[keep.to(batch.out_cache_loc.device)]
        positions = (batch.seq_lens.view(bs, 1).to(cols.device) + cols)[keep]
        self._store_context(slots, features[rows.to(features.device)], positions)

    def _accept(self, trees, verify_input, batch, logits_output, n: int, grammar_mask=None,
                draft_qs=None):
        """(predict [bs*n], accept_lens [bs], accept_index [bs, n]) in eagle_sample's layout;
        draft_qs: per request, the q its tree was redrawn from (rrs) or None (walk)."""
        info = batch.sampling_info
        if not (self.host_sampling and not info.is_all_greedy):
            return eagle_sample(verify_input, batch, logits_output, grammar_mask,
                                watermark_state=self.model_runner.watermark_state)
        logits = adjust_logits(logits_output.next_token_logits, info, n)
        if grammar_mask is not None:
            grammar_mask.apply(logits)  # disallowed tokens -> -inf at every node of a constrained row
        out = sample_accept(trees, logits, info.temperatures.view(-1).tolist(),
                            info.top_ks.tolist(), info.top_ps.tolist(), info.min_ps.tolist(),
                            self.generator, n=n, draft_qs=draft_qs)
        return tuple(t.to(self.device) for t in out)
