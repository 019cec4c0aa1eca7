"""Give a head a draft vocabulary: the target's most frequent answer tokens, which the draft then
scores instead of the whole vocabulary (sglang_jetspec/core/draft_vocab.py; lossless, cheaper).

    python -m launch.draft_vocab --head DIR --data data/regen/smollm2 [--size 8192]

Counts the tokens of the regenerated answers on the training side of the trainer's split (by
prompt hash, --val-percent as in launch.train_head), keeps the --size most frequent plus the
target's end-of-sequence ids, writes DIR/draft_vocab.safetensors and prints how much of the
training and of the held-out answers it covers. Decoders use the file when it is there
(launch.generate / eval_head --draft-vocab off and SGLANG_JETSPEC_DRAFT_VOCAB=off ignore it).
"""

import argparse

from launch.head_files import open_head_for


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m launch.draft_vocab", description=__doc__)
    p.add_argument("--head", required=True, help="head folder to write draft_vocab.safetensors into")
    p.add_argument("--data", nargs="+", required=True, help="regenerated shard folders (shard_*.jsonl)")
    p.add_argument("--model", default=None, help="target Hugging Face folder (default: embedded SmolLM2)")
    p.add_argument("--size", type=int, default=8192, help="tokens kept (before the end-of-sequence ids)")
    p.add_argument("--val-percent", type=float, default=3.0, help="held-out share, as launch.train_head")
    p.add_argument("--force", action="store_true", help="replace an existing draft_vocab.safetensors")
    return p.parse_args(argv)


def eos_ids(model_dir) -> set[int]:
    """End-of-sequence ids from the target's generation config and tokenizer (no weights read)."""
    from transformers import AutoTokenizer, GenerationConfig

    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
    except OSError:
        eos = None
    for src in (eos, AutoTokenizer.from_pretrained(model_dir).eos_token_id):
        if src is not None:
            ids.update([src] if isinstance(src, int) else list(src))
    return ids


def main(argv=None) -> None:
    args = parse_args(argv)
    from sglang_jetspec.core.draft_vocab import FILE_NAME, coverage, most_frequent
    from sglang_jetspec.reference.runner import resolve_model
    from sglang_jetspec.train.dataset import load_sequences, split_validation

    if args.size < 1:
        raise SystemExit(f"--size {args.size}: the draft vocabulary needs at least one token")
    cfg, path = open_head_for(args.head, FILE_NAME, args.force)
    model_dir = resolve_model(args.model)
    train, val = split_validation(load_sequences(args.data), args.val_percent)
    answers = lambda seqs: [q.ids[q.prompt_len:].tolist() for q in seqs]
    vocab, counts = most_frequent(answers(train), args.size, always=eos_ids(model_dir))
    errs = vocab.check(cfg.vocab_size)
    if errs:
        raise SystemExit(f"{args.data} does not fit head {args.head}: " + "; ".join(errs))
    vocab.save(args.head)
    print(f"wrote {path}: {len(vocab)} of {cfg.vocab_size} tokens ({len(counts)} distinct in "
          f"{len(train)} training answers); covers {coverage(vocab, answers(train)):.2%} of the training "
          f"answers' tokens and {coverage(vocab, answers(val)):.2%} of {len(val)} held-out answers'")


if __name__ == "__main__":
    main()
