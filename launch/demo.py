"""The main job on the embedded default: JetSpec next to plain decoding, side by side.

Prepares SmolLM2-135M-Instruct, decodes a few prompts with the target alone (``ar``) and with the
JetSpec reference decoder, and prints per-prompt accepted length, tokens/s for both and whether
the greedy outputs matched. Uses the shipped head when there is one, otherwise an untrained head
(it then shows losslessness, not speed: an untrained drafter accepts almost nothing).
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m launch.demo", description=__doc__)
    p.add_argument("--prompts", default=str(REPO / "data" / "parity_prompts.jsonl"))
    p.add_argument("--num-prompts", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--budget", type=int, default=32)
    args = p.parse_args(argv)

    from sglang_jetspec.model_store import default_head_dir, model_path
    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
    from sglang_jetspec.reference.parity import check_parity
    from sglang_jetspec.reference.prompts import encode_prompts, read_prompts
    from sglang_jetspec.reference.runner import AREngine, load_head_arg
    from sglang_jetspec.reference.target import HFTarget

    target = HFTarget(model_path("smollm2"))
    head_dir = default_head_dir(target.model_dir)
    head = load_head_arg(None if head_dir else "random", target)
    print(f"target: {target.model_dir}\nhead:   {head_dir or 'UNTRAINED (random weights): shows losslessness only'}")
    decoder = ReferenceDecoder(target, head, TreeSettings(budget=args.budget))
    ar = AREngine(target)
    prompts = read_prompts(args.prompts)[: args.num_prompts]
    rows, tot = [], {"ar_tok": 0, "ar_s": 0.0, "js_tok": 0, "js_s": 0.0, "rounds": 0, "acc": 0}
    for text, ids in zip(prompts, encode_prompts(target.tokenizer, prompts)):
        a = ar.generate(ids, args.max_new_tokens)
        j = decoder.generate(ids, args.max_new_tokens)
        rep = check_parity(target.model, ids, a.output_ids, j.output_ids)
        match = "yes" if rep.identical else ("near-tie" if rep.near_tie else "NO")
        tau = sum(j.accepted) / max(j.rounds, 1)  # committed per verify forward
        rows.append((text[:40], len(j.output_ids), tau, len(a.output_ids) / a.seconds,
                     len(j.output_ids) / j.seconds, match))
        tot["ar_tok"] += len(a.output_ids); tot["ar_s"] += a.seconds
        tot["js_tok"] += len(j.output_ids); tot["js_s"] += j.seconds; tot["rounds"] += j.rounds; tot["acc"] += sum(j.accepted)
    print(f"\nbudget {args.budget}, greedy, {args.max_new_tokens} new tokens max, fp32 CPU\n")
    print(f"{'prompt':42} {'tokens':>6} {'accept':>7} {'ar tok/s':>9} {'jetspec tok/s':>14} {'match':>8}")
    for r in rows:
        print(f"{r[0]:42} {r[1]:6d} {r[2]:7.2f} {r[3]:9.1f} {r[4]:14.1f} {r[5]:>8}")
    ar_tps, js_tps = tot["ar_tok"] / tot["ar_s"], tot["js_tok"] / tot["js_s"]
    print(f"\nall: accept length {tot['acc'] / max(tot['rounds'], 1):.2f}, ar {ar_tps:.1f} tok/s, "
          f"jetspec {js_tps:.1f} tok/s, speedup {js_tps / ar_tps:.2f}x")
    if any(r[5] == "NO" for r in rows):
        raise SystemExit("greedy outputs differ from plain decoding beyond a near-tie")


if __name__ == "__main__":
    main()
