"""Answer prompt files with the target itself, resumably:
``python -m launch.regenerate --model DIR --prompts FILE [FILE...] --out DIR``."""

import argparse
from pathlib import Path

import torch

from sglang_jetspec.train.regen_backends import load_generator
from sglang_jetspec.train.regenerate import regenerate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m launch.regenerate", description=__doc__)
    parser.add_argument("--model", required=True, help="Hugging Face folder of the target")
    parser.add_argument("--prompts", nargs="+", required=True, help="prompt JSONL files (interleaved)")
    parser.add_argument("--out", required=True, help="output folder of shard_*.jsonl (resumed if present)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts of the interleaved list")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--shard-size", type=int, default=1000, help="answers per shard file")
    parser.add_argument("--backend", choices=("auto", "hf", "sglang"), default="auto",
                        help="auto: sglang on a CUDA machine where it is installed, else transformers")
    parser.add_argument("--device", default=None, help="device of the transformers backend (default: cuda if present)")
    parser.add_argument("--skip-answered", nargs="+", default=[], metavar="DIR",
                        help="answer folders whose prompts count as done (extend a published set into a new --out)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
    generator = load_generator(args.model, args.backend, args.device)
    try:
        stats = regenerate(generator, args.prompts, args.out, args.max_new_tokens, args.batch_size, args.limit,
                           args.shard_size, model_name=Path(args.model).name, skip_answered=args.skip_answered)
    finally:
        generator.close()
    print(f"listed {stats.listed}, already done {stats.skipped}, answered {stats.answered} "
          f"({stats.output_tokens} tokens, {stats.seconds:.0f}s, {stats.answers_per_min:.1f} answers/min, "
          f"{stats.tokens_per_s:.1f} tok/s)")


if __name__ == "__main__":
    main()
