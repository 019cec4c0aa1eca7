"""Randomised lossless cases for the reliability suite, reproducible from one seed.

Each case is a /generate request: a prompt (a bundled prompt, a random token string, a repeat
of an earlier case's prompt so the radix cache hits, or a prompt filling the context up to
max_new_tokens), max_new_tokens 1..64, sometimes stop strings, and per-request tree settings
(custom_params["jetspec"]: budget 1..64, width 1..8, depth 1..15) sent to a JETSPEC server whose
flags allow the largest of them. Cases are grouped in waves of 1..16 sent concurrently, so batch
sizes vary and requests join and leave running batches.

Reproduce: JETSPEC_FUZZ_SEED picks the seed (the failure message prints it and the case index);
JETSPEC_FUZZ_ONLY=3,17 runs only those cases of that seed.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field

DEFAULT_SEED = 20261129
STOPS = [".", "\n", " the", ",", "(", " =", "1", "\n\n"]


@dataclass
class FuzzCase:
    index: int
    kind: str  # prompt | random | repeat | long
    prompt_ids: list[int]
    max_new_tokens: int
    stop: list[str] | None = None
    tree: dict | None = None  # custom_params["jetspec"], None = the server's settings
    wave: int = 0
    seed: int = DEFAULT_SEED
    extra: dict = field(default_factory=dict)

    def sampling_params(self, with_tree: bool) -> dict:
        sp = {"temperature": 0.0, "max_new_tokens": self.max_new_tokens}
        if self.stop:
            sp["stop"] = self.stop
        if with_tree and self.tree is not None:
            sp["custom_params"] = {"jetspec": self.tree}
        return sp

    def describe(self) -> str:
        return (f"case {self.index} (seed {self.seed}, wave {self.wave}): {self.kind} prompt of "
                f"{len(self.prompt_ids)} tokens, max_new_tokens {self.max_new_tokens}, stop {self.stop}, "
                f"tree {self.tree}")


def fuzz_seed() -> int:
    return int(os.environ.get("JETSPEC_FUZZ_SEED", DEFAULT_SEED))


def selected(cases: list[FuzzCase]) -> list[FuzzCase]:
    only = os.environ.get("JETSPEC_FUZZ_ONLY")
    if not only:
        return cases
    keep = {int(x) for x in only.split(",") if x.strip()}
    return [c for c in cases if c.index in keep]


def make_cases(seed: int, count: int, pool: list[list[int]], vocab_size: int, context_len: int,
               first_token: int = 17, max_budget: int = 64, max_width: int = 8,
               max_depth: int = 15) -> list[FuzzCase]:
    """`count` cases from `pool` (tokenised bundled prompts); random token ids come from
    [first_token, vocab_size), skipping the special tokens at the start of the vocabulary."""
    if not pool:
        raise ValueError("make_cases needs at least one prompt in the pool")
    rng = random.Random(seed)
    cases: list[FuzzCase] = []
    wave, left_in_wave = 0, 0
    for i in range(count):
        if left_in_wave == 0:
            wave += 1
            left_in_wave = rng.randint(1, 16)
        left_in_wave -= 1
        max_new = max(1, min(64, round(math.exp(rng.uniform(0, math.log(64))))))  # log-uniform
        r = rng.random()
        if r < 0.45:
            kind, ids = "prompt", list(rng.choice(pool))
        elif r < 0.65:
            kind, ids = "random", [rng.randrange(first_token, vocab_size) for _ in range(rng.randint(1, 48))]
        elif r < 0.85 and cases:
            kind, ids = "repeat", list(rng.choice(cases).prompt_ids)
        else:
            kind = "long"
            # SGLang admits input + max_new_tokens <= context and input < context - 6
            want = min(context_len - max_new - 1, context_len - 7) - rng.randint(0, 4)
            ids = []
            while len(ids) < want:
                ids += rng.choice(pool)
            ids = ids[-want:]
        max_new = max(1, min(max_new, context_len - 1 - len(ids)))  # a repeated long prompt
        stop = [rng.choice(STOPS)] if rng.random() < 0.25 else None
        tree = None
        if rng.random() < 0.9:
            tree = {"budget": max(1, min(max_budget, round(math.exp(rng.uniform(0, math.log(max_budget)))))),
                    "width": rng.randint(1, max_width), "depth": rng.randint(1, max_depth)}
        cases.append(FuzzCase(i, kind, ids, max_new, stop, tree, wave, seed))
    return cases


def waves(cases: list[FuzzCase]) -> list[list[FuzzCase]]:
    out: dict[int, list[FuzzCase]] = {}
    for c in cases:
        out.setdefault(c.wave, []).append(c)
    return [out[k] for k in sorted(out)]
