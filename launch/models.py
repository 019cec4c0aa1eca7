"""Embedded default models: ``python -m launch.models path smollm2`` (or ``qwen3moe``, ``qwen3moe-e64``) prints the
prepared folder; ``python -m launch.models head smollm2`` (or ``qwen3moe``, ``qwen3moe-e64``) the folder of the
draft head shipped for that target (the one the launchers use when no --head is given)."""

import argparse

from sglang_jetspec.model_store import KNOWN_MODELS, model_path, shipped_head_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m launch.models", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("path", help="print the folder of an embedded model, preparing it if needed")
    p.add_argument("name", choices=KNOWN_MODELS)
    h = sub.add_parser("head", help="print the folder of the draft head shipped for an embedded model")
    h.add_argument("name", choices=KNOWN_MODELS)
    args = parser.parse_args(argv)
    if args.cmd == "path":
        print(model_path(args.name))
    elif args.cmd == "head":
        print(shipped_head_dir(args.name))


if __name__ == "__main__":
    main()
