"""Generate with the target alone (``ar``) or with JetSpec (``reference``) and write JSONL.

    python -m launch.generate --engine reference --prompts prompts.jsonl --max-new-tokens 128 \
        --out out.jsonl [--model DIR] [--head DIR|random] [--budget 32] [--width 7] [--depth 15]

Input lines are ``{"prompt": "..."}`` (the chat template is applied unless ``--raw``). Each
output line has ``output_ids``, ``text``, ``rounds``, ``accepted`` and ``seconds``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m launch.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=["ar", "reference"], required=True)
    p.add_argument("--prompts", required=True, help="JSONL file with one {\"prompt\": ...} per line")
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="target HF folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--head", default=None,
                   help="draft head folder, or 'random' for an untrained head (default: the shipped head)")
    p.add_argument("--budget", type=int, default=32, help="tree nodes incl. root (1 = plain decoding)")
    p.add_argument("--width", type=int, default=7, help="top-k candidates per depth")
    p.add_argument("--depth", type=int, default=None, help="max tree depth (default block_size - 1)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true", help="do not apply the chat template")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.max_new_tokens < 1:
        p.error(f"--max-new-tokens {args.max_new_tokens} must be >= 1")
    if args.temperature < 0:
        p.error(f"--temperature {args.temperature} must be >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from sglang_jetspec.reference.prompts import encode_prompts, read_prompts
    from sglang_jetspec.reference.runner import build_engine

    prompts = read_prompts(args.prompts)
    engine = build_engine(args)
    encoded = encode_prompts(engine.tokenizer, prompts, raw=args.raw)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for i, ids in enumerate(tqdm(encoded, desc=f"{args.engine}", unit="prompt", file=sys.stderr)):
            res = engine.generate(ids, args.max_new_tokens, temperature=args.temperature,
                                  top_k=args.top_k, top_p=args.top_p, seed=args.seed + i)
            res.text = engine.tokenizer.decode(res.output_ids, skip_special_tokens=True)
            f.write(json.dumps(res.to_json()) + "\n")
    print(f"wrote {len(encoded)} results to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
