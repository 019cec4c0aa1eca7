"""Wall clock of the reference decoder against plain decoding, side by side in one process.

Per prompt, plain decoding (`ar`: one target forward per token through the same kernels and
forward path as the reference decoder's verify, reference/ar.py) and every reference
configuration (node budget x draft vocabulary on/off) decode the same prompt one after the
other, the order rotating from prompt to prompt, so a slow minute of a shared machine falls on
all of them. Reported per prompt set: tokens/s, speedup over `ar`, accepted length (tokens
committed per target forward, bonus included) and whether every output equals `ar`'s
(a divergence is checked for a floating-point near-tie, reference/parity.py).

Before any timing every method decodes a few tokens of the first prompt once, untimed: the first
call of a process pays one-off costs (kernel selection of the CPU linear layers, allocator
growth; about 0.2 s for plain decoding on the 2-core VM) that would otherwise land on whichever
method the rotation puts first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sglang_jetspec.reference.ar import generate_ar
from sglang_jetspec.reference.parity import check_parity


@dataclass
class Tally:
    tokens: int = 0
    seconds: float = 0.0
    rounds: int = 0
    committed: int = 0
    same: int = 0
    near_tie: int = 0
    mismatch: list[str] = field(default_factory=list)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def accept(self) -> float:
        return self.committed / self.rounds if self.rounds else 1.0


def run_wall_clock(target, decoders: dict, prompts: dict[str, list[list[int]]], max_new_tokens: int,
                   progress=None, other_ar: dict | None = None, hf_ar: bool = False,
                   warmup_tokens: int = 8) -> dict[str, dict[str, Tally]]:
    """decoders: label -> ReferenceDecoder. prompts: set name -> encoded prompts. other_ar: label ->
    another target (e.g. the same model with another CPU linear backend) whose plain decoding is
    timed beside ``target``'s. hf_ar: also time Hugging Face's ``generate`` on ``target`` as
    `ar[hf]`. Returns tallies[set][label] with label `ar` (target's) first."""
    other_ar = dict(other_ar or {})
    if hf_ar:
        other_ar["ar[hf]"] = target
    labels = ["ar"] + list(other_ar) + list(decoders)

    def decode(lab, ids, n):
        if lab == "ar":
            return generate_ar(target, ids, n)
        if lab in other_ar:
            return generate_ar(other_ar[lab], ids, n, loop="hf" if lab == "ar[hf]" else "step")
        return decoders[lab].generate(ids, n)

    first = next((enc[0] for enc in prompts.values() if enc), None)
    if first is not None and warmup_tokens > 0:
        for lab in labels:  # untimed (see the module docstring)
            decode(lab, first, min(warmup_tokens, max_new_tokens))
    out = {}
    turn = 0
    for name, encoded in prompts.items():
        tallies = {lab: Tally() for lab in labels}
        for ids in encoded:
            results = {}
            order = labels[turn % len(labels):] + labels[: turn % len(labels)]
            turn += 1
            for lab in order:
                results[lab] = decode(lab, ids, max_new_tokens)
            want = results["ar"].output_ids
            for lab in labels:
                r, t = results[lab], tallies[lab]
                t.tokens += len(r.output_ids)
                t.seconds += r.seconds
                plain = lab == "ar" or lab in other_ar
                t.rounds += len(r.output_ids) if plain else r.rounds
                t.committed += len(r.output_ids) if plain else sum(r.accepted)
                rep = check_parity(target.model, ids, want, r.output_ids)
                if rep.identical:
                    t.same += 1
                elif rep.near_tie:
                    t.near_tie += 1
                else:
                    t.mismatch.append(rep.detail)
            if progress is not None:
                progress(name, results)
        out[name] = tallies
    return out


def format_wall_clock(tallies: dict[str, dict[str, Tally]]) -> str:
    lines = ["| prompts | method | tok/s | speedup vs ar | accept length | outputs = ar |",
             "|---|---|---:|---:|---:|---:|"]
    for name, per in tallies.items():
        base = per["ar"].tok_s
        n = per["ar"].same + per["ar"].near_tie + len(per["ar"].mismatch)
        for lab, t in per.items():
            eq = f"{t.same}/{n}" + (f" (+{t.near_tie} near-tie)" if t.near_tie else "")
            lines.append(f"| {name} | {lab} | {t.tok_s:.2f} | {t.tok_s / base if base else 0:.2f}x | "
                         f"{t.accept:.2f} | {eq} |")
    return "\n".join(lines)
