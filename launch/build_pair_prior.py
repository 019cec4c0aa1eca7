"""Give a head an n-gram prior: bigram and trigram counts of the target's own answers, which the
tree builder uses to choose each node's children from the draft's candidates by their fit with the
node's path (sglang_jetspec/core/pair_prior.py; lossless, the target still verifies every node).

    python -m launch.build_pair_prior --head DIR --data data/regen/smollm2 [more folders]

Counts the regenerated answers on the training side of the trainer's split (by prompt hash,
--val-percent as in launch.train_head), each with the last two prompt tokens before it (the root's
context in the first round), writes DIR/pair_prior.safetensors with the scoring settings given
here in its metadata, and prints the table sizes. Decoders use the file when it is there
(launch.generate / eval_head --pair-prior off and SGLANG_JETSPEC_PAIR_PRIOR=off ignore it).
"""

import argparse
import os

from launch.head_files import open_head_for
from sglang_jetspec.core.pair_prior import PriorSettings

_D = PriorSettings()


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m launch.build_pair_prior", description=__doc__)
    p.add_argument("--head", required=True, help="head folder to write pair_prior.safetensors into")
    p.add_argument("--data", nargs="+", required=True, help="regenerated shard folders (shard_*.jsonl)")
    p.add_argument("--val-percent", type=float, default=3.0, help="held-out share, as launch.train_head")
    p.add_argument("--weight", type=float, default=_D.weight, help="weight of the bigram term")
    p.add_argument("--weight3", type=float, default=_D.weight3, help="weight of the trigram term")
    p.add_argument("--beta", type=float, default=_D.beta, help="pseudo-counts of the bigram estimate")
    p.add_argument("--beta3", type=float, default=_D.beta3, help="pseudo-counts of the trigram estimate")
    p.add_argument("--clip", type=float, default=_D.clip, help="each term is at least -clip")
    p.add_argument("--pool", type=int, default=_D.pool, help="draft candidates per depth to choose children from")
    p.add_argument("--force", action="store_true", help="replace an existing pair_prior.safetensors")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from sglang_jetspec.core.pair_prior import FILE_NAME, PairPrior
    from sglang_jetspec.train.dataset import load_sequences, split_validation

    try:
        settings = PriorSettings(weight=args.weight, weight3=args.weight3, beta=args.beta, beta3=args.beta3,
                                 clip=args.clip, pool=args.pool)
    except ValueError as e:
        raise SystemExit(str(e)) from e
    cfg, path = open_head_for(args.head, FILE_NAME, args.force)
    train, val = split_validation(load_sequences(args.data), args.val_percent)
    seqs = [q.ids[max(0, q.prompt_len - 2):].tolist() for q in train]
    try:
        prior = PairPrior.from_sequences(seqs, cfg.vocab_size, settings)
    except ValueError as e:
        raise SystemExit(f"{args.data} does not fit head {args.head}: {e}") from e
    prior.save(args.head)
    print(f"wrote {path}: {len(prior)} bigrams, {prior.trigram.shape[0]} trigrams from {len(train)} training "
          f"answers ({len(val)} held out), {os.path.getsize(path) / 1e6:.1f} MB; settings {settings}")


if __name__ == "__main__":
    main()
