"""Generate with the target alone (``ar``), the JetSpec reference decoder (``reference``) or the
real SGLang server with JETSPEC (``sglang``), and write JSONL.

    python -m launch.generate --engine reference --prompts prompts.jsonl --max-new-tokens 128 \
        --out out.jsonl [--model DIR] [--head DIR|random] [--budget 32] [--width 7] [--depth 15]

Input lines are ``{"prompt": "..."}`` (the chat template is applied unless ``--raw``). Each
output line has ``output_ids``, ``text``, ``rounds``, ``accepted`` and ``seconds``. With
``--engine sglang`` a local server is started and stopped (``--budget 1``: without speculation),
or ``--server-url`` names a running one; the server reports rounds but not per-round counts, so
``accepted`` is empty there (mean accepted length = (len(output_ids) - 1) / rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m launch.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=["ar", "reference", "sglang"], required=True)
    p.add_argument("--prompts", required=True, help="JSONL file with one {\"prompt\": ...} per line")
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="target HF folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--head", default=None,
                   help="draft head folder, or 'random' for an untrained head (default: the shipped head)")
    p.add_argument("--budget", type=int, default=32, help="tree nodes incl. root (1 = plain decoding)")
    p.add_argument("--width", type=int, default=7, help="top-k candidates per depth")
    p.add_argument("--depth", type=int, default=None, help="max tree depth (default block_size - 1)")
    p.add_argument("--draft-vocab", choices=("on", "off"), default="on",
                   help="draft over the head folder's draft_vocab.safetensors when it has one (off: the whole "
                        "vocabulary; the output is the same either way). sglang: for the server it starts "
                        "(SGLANG_JETSPEC_DRAFT_VOCAB); a --server-url server keeps its own setting")
    p.add_argument("--pair-prior", choices=("on", "off"), default="on",
                   help="shape trees with the head folder's pair_prior.safetensors when it has one (off: plain "
                        "best-first trees; the output is the same either way). sglang: for the server it starts "
                        "(SGLANG_JETSPEC_PAIR_PRIOR); a --server-url server keeps its own setting")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true", help="do not apply the chat template")
    p.add_argument("--device", default="cpu")
    p.add_argument("--server-url", default=None, help="--engine sglang: use this running server")
    p.add_argument("--server-log", default=None, help="--engine sglang: where the started server logs")
    args = p.parse_args(argv)
    if args.max_new_tokens < 1:
        p.error(f"--max-new-tokens {args.max_new_tokens} must be >= 1")
    if args.temperature < 0:
        p.error(f"--temperature {args.temperature} must be >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from sglang_jetspec.reference.prompts import read_prompts
    from sglang_jetspec.reference.runner import build_engine

    prompts = read_prompts(args.prompts)
    engine = _sglang_engine(args) if args.engine == "sglang" else build_engine(args)
    try:
        _run(args, prompts, engine)
    finally:
        if args.engine == "sglang":
            engine.close()


def _sglang_engine(args):
    from sglang_jetspec.integration.server_engine import SGLangEngine, head_folder
    from sglang_jetspec.reference.runner import resolve_model

    model = resolve_model(args.model)
    head = None if args.budget == 1 or args.server_url else head_folder(args.head, model)
    if args.draft_vocab == "off" and not args.server_url:  # the started server inherits the environment
        from sglang_jetspec.integration.draft_vocab_setting import ENV

        os.environ[ENV] = "off"
    if args.pair_prior == "off" and not args.server_url:
        from sglang_jetspec.integration.pair_prior_setting import ENV as PRIOR_ENV

        os.environ[PRIOR_ENV] = "off"
    return SGLangEngine(model, head, budget=args.budget, width=args.width, depth=args.depth,
                        server_url=args.server_url, log_path=args.server_log)


def _run(args, prompts, engine) -> None:
    from sglang_jetspec.reference.prompts import encode_prompts

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
