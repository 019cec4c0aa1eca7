"""Train a JetSpec draft head on regenerated data, in the published checkpoint layout:
``python -m launch.train_head --model DIR --data DIR [DIR...] --out DIR``.

Multi-GPU: ``torchrun --nproc-per-node N -m launch.train_head ...`` (DDP over the head only).
"""

import argparse
import os

import torch

from sglang_jetspec.core.head import DraftHead
from sglang_jetspec.core.head_config import HeadConfig
from sglang_jetspec.train import distributed as dist_util
from sglang_jetspec.train.checkpointing import has_training_state
from sglang_jetspec.train.dataset import DEFAULT_MAX_LEN, load_sequences, split_validation
from sglang_jetspec.train.evaluate import depth_metrics, mean_accepted_length
from sglang_jetspec.train.head_init import build_head
from sglang_jetspec.train.ngram import NgramTable
from sglang_jetspec.train.teacher import FrozenTarget
from sglang_jetspec.train.trainer import TrainConfig, Trainer


DEFAULT_NUM_LAYERS = 2
DEFAULT_BLOCK_SIZE = 16


def check_shape_flags(args, folder: str, why: str, causal: bool | None = None) -> None:
    """A head that is resumed or started from keeps its own shapes: refuse a shape flag that says
    otherwise (it used to be ignored without a word). ``causal`` is the mask the command implies for
    this folder (None: not checked)."""
    try:
        cfg = HeadConfig.load(folder)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"{folder} {why}: {e}") from e
    given = {"--num-layers": (args.num_layers, cfg.num_hidden_layers),
             "--block-size": (args.block_size, cfg.block_size),
             "--mlp-size": (args.mlp_size, cfg.intermediate_size),
             "--target-layer-ids": (args.target_layer_ids, list(cfg.target_layer_ids))}
    for flag, (value, saved) in given.items():
        if value is not None and value != saved:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            raise SystemExit(f"{flag} {shown} does not fit {folder}, which {why} and has {flag} "
                             f"{','.join(map(str, saved)) if isinstance(saved, list) else saved}; "
                             "drop the flag or use another --out")
    if causal is not None and cfg.causal_head != causal:
        kind = "causal" if cfg.causal_head else "bidirectional"
        raise SystemExit(f"{folder} {why} and holds a {kind} head; this command trains a "
                         f"{'causal' if causal else 'bidirectional'} one"
                         + (" (add --bidirectional)" if not cfg.causal_head else " (drop --bidirectional)"))


def check_twin_start(args, resume: bool) -> None:
    """--init-head with --also-bidirectional continues a pair: the twin needs its own start
    (--init-twin, a bidirectional head of the same shapes), refused at startup otherwise."""
    if args.init_twin and not args.also_bidirectional:
        raise SystemExit(f"--init-twin {args.init_twin} starts the bidirectional twin; add --also-bidirectional DIR")
    if resume or not args.also_bidirectional or not (args.init_head or args.init_twin):
        return
    if not (args.init_head and args.init_twin):
        raise SystemExit("--also-bidirectional with a started head needs both starts: --init-head DIR (causal) "
                         "and --init-twin DIR (bidirectional), so the pair stays trained identically")
    check_shape_flags(args, args.init_twin, "is the --init-twin", causal=False)
    pair = [HeadConfig.load(args.init_head).to_dict(), HeadConfig.load(args.init_twin).to_dict()]
    for cfg in pair:
        cfg["dflash_config"] = {k: v for k, v in cfg["dflash_config"].items() if k != "causal_head"}
    differ = sorted(k for k in set(pair[0]) | set(pair[1]) if pair[0].get(k) != pair[1].get(k))
    if differ:
        raise SystemExit(f"--init-twin {args.init_twin} and --init-head {args.init_head} differ in {', '.join(differ)}; "
                         "a twin has its causal head's config but for the in-block mask")


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N, two integers such as 0/2") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"{text!r}: K/N needs 0 <= K < N")
    return k, n


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m launch.train_head", description=__doc__)
    p.add_argument("--model", default=None, help="target Hugging Face folder (default: embedded SmolLM2)")
    p.add_argument("--data", nargs="+", required=True, help="regenerated shard folders (shard_*.jsonl)")
    p.add_argument("--out", required=True, help="output head folder (also holds trainer_state.pt)")
    p.add_argument("--num-layers", type=int, default=None, help="decoder layers of a new head (default 2)")
    p.add_argument("--block-size", type=int, default=None, help="block of a new head (default 16)")
    p.add_argument("--mlp-size", type=int, default=None, metavar="N",
                   help="width of the head's MLP (default: the target's intermediate_size; an MoE target "
                        "whose layers are all sparse never uses that width, so its head may be wider)")
    p.add_argument("--bidirectional", action="store_true", help="DFlash baseline: full mask inside the block")
    p.add_argument("--target-layer-ids", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="comma-separated tapped target layers (default: published rule)")
    p.add_argument("--init-from-target", action=argparse.BooleanOptionalAction, default=True,
                   help="start the head's layers from the target's last decoder layers")
    p.add_argument("--recency-init", action=argparse.BooleanOptionalAction, default=None,
                   help="layer 0 starts with a latest-context head group and an anchor head group "
                        "(default: on when the head has >= 2 kv heads, the two groups it needs)")
    p.add_argument("--qk-scale-init", action=argparse.BooleanOptionalAction, default=False,
                   help="copied layers start with q_norm/k_norm gains equal to the target layer's q/k RMS "
                        "(its attention logit scale) instead of 1")
    p.add_argument("--window-steps", type=int, default=0,
                   help="context-window curriculum: widen from --window-start positions to the full "
                        "prefix over this many steps (0 = off)")
    p.add_argument("--window-start", type=int, default=8)
    p.add_argument("--init-head", default=None, metavar="DIR",
                   help="start from the weights of an existing head folder (same shapes; its config, "
                        "including causal/bidirectional, is kept) instead of a fresh initialisation")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="bf16 autocast: auto = on CUDA or on a CPU with bf16 matrix units")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--stop-at-step", type=int, default=0, metavar="N",
                   help="end after step N and save there; the learning-rate schedule still spans --steps "
                        "(a checkpoint partway through a longer schedule; 0 = run all --steps)")
    p.add_argument("--time-budget-min", type=float, default=0.0,
                   help="end within this many minutes: --steps is lowered after a short probe and the "
                        "schedule re-fitted (0 = off); the step count reached is printed")
    p.add_argument("--also-bidirectional", metavar="DIR", default=None,
                   help="also train a bidirectional head (the DFlash baseline) into DIR in lockstep: "
                        "same data, batches, anchors, steps and hyperparameters, one shared target pass")
    p.add_argument("--init-twin", default=None, metavar="DIR",
                   help="with --also-bidirectional and --init-head: start the twin from this bidirectional "
                        "head folder (the continuation of an existing causal/bidirectional pair)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=None, help="default: min(50, steps // 10)")
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--anchors-per-seq", type=int, default=64)
    p.add_argument("--seqs-per-step", type=int, default=1)
    p.add_argument("--gamma", type=float, default=0.0, help="depth weight exp(-(i-1)/gamma); 0 = uniform")
    p.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN, help="cut sequences to this many tokens")
    p.add_argument("--val-percent", type=float, default=3.0, help="share of the data held out (by prompt hash)")
    p.add_argument("--val-seqs", type=int, default=16, help="held-out answers scored at each evaluation")
    p.add_argument("--val-anchors", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=100, help="0: no periodic evaluation")
    p.add_argument("--save-every", type=int, default=None, help="default: --eval-every")
    p.add_argument("--eval-prompts", nargs="*", default=[], help="held-out prompt files for accepted length")
    p.add_argument("--eval-num-prompts", type=int, default=2, help="prompts per file per evaluation")
    p.add_argument("--eval-budget", type=int, default=32)
    p.add_argument("--eval-max-new-tokens", type=int, default=64)
    p.add_argument("--feature-cache", default=None, metavar="DIR",
                   help="keep the target's features and top-k teacher per training sequence in DIR "
                        "(built once, missing entries first; then no target pass per step)")
    p.add_argument("--cache-only", action="store_true", help="build --feature-cache and exit")
    p.add_argument("--cache-shard", type=parse_shard, default=None, metavar="K/N",
                   help="with --cache-only: build only every N-th training sequence starting at K (0-based), "
                        "so N processes can fill one cache folder side by side")
    p.add_argument("--teacher-topk", type=int, default=None,
                   help="top-k teacher + rest bucket (default: exact full distribution; 32 with a cache)")
    p.add_argument("--loss-vocab", type=int, default=None,
                   help="estimate the head's normaliser over N candidate tokens (teacher top-k union + "
                        "uniform negatives) instead of the whole vocabulary (default: exact)")
    p.add_argument("--train-seqs", type=int, default=None, help="train on the first N training sequences only")
    p.add_argument("--resume", action="store_true", help="continue from --out's trainer_state.pt")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def make_evaluator(args, target, hf_target, val_seqs, train_seqs):
    """Held-out depth accuracy vs the n-gram baselines, plus accepted length on held-out prompts."""
    from sglang_jetspec.reference.prompts import encode_prompts, read_prompts

    base = {}
    if val_seqs:
        base = {f"{n}gram_acc": round(NgramTable(train_seqs, n).accuracy(val_seqs), 4) for n in (2, 3)}
        print(f"[baseline] {len(val_seqs)} held-out answers: bigram {base['2gram_acc']:.4f} "
              f"trigram {base['3gram_acc']:.4f} (next-token accuracy)")
    prompts = {}
    for f in args.eval_prompts:
        stem = os.path.basename(f).removesuffix(".jsonl")
        prompts[stem] = encode_prompts(hf_target.tokenizer, read_prompts(f)[: args.eval_num_prompts])

    def evaluate(step, head):
        out = {}
        if val_seqs:
            m = depth_metrics(target, head, val_seqs, args.val_anchors)
            out.update(acc1=round(m.accuracy[0], 4), acc=[round(a, 3) for a in m.accuracy], kl=round(m.mean_kl, 4))
            out.update(base)
        for stem, ids in prompts.items():
            rep = mean_accepted_length(hf_target, head, ids, args.eval_budget, args.eval_max_new_tokens)
            out[f"tau_{stem}@{args.eval_budget}"] = round(rep.mean_accepted, 3)
        return out

    return evaluate


def open_feature_cache(args, hf, target, train_seqs, layer_ids, info):
    """The --feature-cache folder with every training sequence in it (rank 0 builds what is missing)."""
    from sglang_jetspec.train.feature_cache import META_NAME, FeatureCache, build_missing

    topk = max(args.teacher_topk or 32, 32)  # a new cache keeps 32 (more if asked): k can be cut later
    exists = os.path.isfile(os.path.join(args.feature_cache, META_NAME))
    cache = FeatureCache.open(args.feature_cache, layer_ids, args.teacher_topk or 1 if exists else topk,
                              str(hf.model_dir))
    topk = cache.topk
    if info.is_main:
        k, n = args.cache_shard or (0, 1)
        added = build_missing(cache, target, train_seqs[k::n], progress=not args.no_progress)
        print(f"[feature cache] {args.feature_cache}: {added} sequences added, {len(cache)} cached "
              f"(taps {layer_ids}, teacher top-{topk})")
    dist_util.barrier(info)
    cache.reload()
    return cache


def main(argv=None) -> None:
    args = parse_args(argv)
    from sglang_jetspec.train.memory import return_big_buffers_to_os

    return_big_buffers_to_os()  # long CPU runs: no heap-fragmentation growth
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already fixed in this process (a second in-process run)
            pass
    from sglang_jetspec.reference.runner import default_mask_token_id, resolve_model
    from sglang_jetspec.reference.target import HFTarget

    info = dist_util.init_distributed()
    device = dist_util.device_for(info)
    resume = args.resume and has_training_state(args.out)
    outs = [args.out] + ([args.also_bidirectional] if args.also_bidirectional else [])
    if args.also_bidirectional and args.bidirectional:
        raise SystemExit("--also-bidirectional trains the bidirectional twin of a causal head; drop --bidirectional")
    if args.cache_shard and not (args.cache_only and args.feature_cache):
        raise SystemExit(f"--cache-shard {args.cache_shard[0]}/{args.cache_shard[1]} builds part of a cache; "
                         "it needs --feature-cache DIR and --cache-only (training needs every sequence)")
    if args.mlp_size is not None and args.mlp_size < 1:
        raise SystemExit(f"--mlp-size {args.mlp_size}: the head's MLP width must be a positive integer")
    if args.mlp_size is not None and args.init_head:
        raise SystemExit("--mlp-size shapes a new head; --init-head keeps the shapes of the head it starts from")
    for out in outs:
        if not args.resume and has_training_state(out):
            raise SystemExit(f"{out} already holds a training run; pass --resume or another --out")
        if args.resume and has_training_state(out) != resume:
            raise SystemExit(f"--resume needs a trainer state in every output folder; {out} differs")
        if resume:
            check_shape_flags(args, out, "is resumed", causal=(not args.bidirectional) if out == args.out else False)
    if args.init_head and not resume:
        check_shape_flags(args, args.init_head, "is the --init-head", causal=not args.bidirectional)
    check_twin_start(args, resume)

    hf = HFTarget(resolve_model(args.model), device=str(device))
    target = FrozenTarget(hf.model, memo=2 * args.seqs_per_step if args.also_bidirectional else 0)
    seqs = load_sequences(args.data, args.max_len)
    train_seqs, val_seqs = split_validation(seqs, args.val_percent, args.val_seqs)
    if args.train_seqs is not None:
        train_seqs = train_seqs[: args.train_seqs]

    recency_init = args.recency_init
    if recency_init is None:  # the head copies the target's kv head count (head_config_for_target)
        recency_init = hf.model.config.num_key_value_heads >= 2
        if not recency_init and info.is_main:
            print(f"[init] no recency init: the target has {hf.model.config.num_key_value_heads} kv head(s), "
                  "the init needs 2 groups")

    def new_head(out, causal, init):
        if resume:
            return DraftHead(HeadConfig.load(out)).to(device)
        if init:
            from sglang_jetspec.core.checkpoint import load_head

            return load_head(init).train().to(device)  # its mask was checked at startup
        return build_head(hf.model, args.num_layers or DEFAULT_NUM_LAYERS, args.block_size or DEFAULT_BLOCK_SIZE,
                          causal=causal,
                          mask_token_id=default_mask_token_id(hf.tokenizer), init_from_target=args.init_from_target,
                          seed=args.seed, target_layer_ids=args.target_layer_ids,
                          recency_init=recency_init, calib_ids=train_seqs[0].ids.to(device),
                          qk_scale_init=args.qk_scale_init, intermediate_size=args.mlp_size).to(device)

    head = new_head(args.out, not args.bidirectional, args.init_head)
    head.config.check_target(target.hidden_size, target.num_layers, target.vocab_size)
    cache = None
    if args.feature_cache:
        cache = open_feature_cache(args, hf, target, train_seqs, head.config.target_layer_ids, info)
        if args.cache_only:
            dist_util.shutdown(info)
            return
    make_cfg = lambda: TrainConfig(
        steps=args.steps, lr=args.lr,
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else min(50, args.steps // 10),
        min_lr_ratio=args.min_lr_ratio, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
        seqs_per_step=args.seqs_per_step, anchors_per_seq=args.anchors_per_seq, gamma=args.gamma,
        seed=args.seed, eval_every=args.eval_every,
        save_every=args.eval_every if args.save_every is None else args.save_every,
        window_start=args.window_start, window_steps=args.window_steps,
        time_budget_s=60 * args.time_budget_min, bf16=args.bf16, stop_at=args.stop_at_step,
        teacher_topk=args.teacher_topk, loss_vocab=args.loss_vocab,
    )
    evaluator = make_evaluator(args, target, hf, val_seqs, train_seqs) if info.is_main else None
    trainer = Trainer(make_cfg(), target, head, train_seqs, args.out, info, evaluator, progress=not args.no_progress,
                      feature_cache=cache)
    if resume:
        print(f"resuming {args.out} at step {trainer.resume()} (head config from the checkpoint)")
    if args.also_bidirectional:
        twin = Trainer(make_cfg(), target, new_head(args.also_bidirectional, False, args.init_twin), train_seqs,
                       args.also_bidirectional, info, evaluator, progress=False, feature_cache=cache)
        if resume:
            twin.resume()
        trainer.add_companion(twin)  # checks both are at the same step

    n_params = sum(p.numel() for p in head.parameters())
    if info.is_main:
        c = head.config
        print(f"head: {c.num_hidden_layers} layers, {n_params / 1e6:.2f}M params, causal={c.causal_head}, "
              f"taps {c.target_layer_ids}, block {c.block_size}; data: {len(train_seqs)} train / "
              f"{len(val_seqs)} held-out sequences ({sum(len(q.ids) - q.prompt_len for q in train_seqs)} answer tokens)"
              f"; world size {info.world_size}")
    trainer.run()
    if info.is_main:
        for t in [trainer] + trainer.companions:
            print(f"saved head to {t.out_dir} (step {t.step})")
    dist_util.shutdown(info)


if __name__ == "__main__":
    main()
