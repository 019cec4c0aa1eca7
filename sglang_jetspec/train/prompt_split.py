"""Prompt candidates and their train / held-out split by group.

Several prompts can come from one origin (the same standard-library function asked for and
explained, the same topic in two templates). Splitting by prompt would leak that origin into
the held-out set, so the split is by ``group``: a group's prompts all land on one side.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class PromptCandidate:
    prompt: str
    source: str        # where it came from, e.g. "humaneval", "stdlib-write", "math-shopping"
    group: str         # origin; the split never separates a group
    priority: int = 1  # 0: taken into train before any priority-1 group when train is capped

    def record(self) -> dict:
        return {"prompt": self.prompt, "source": self.source}


def dedupe(cands: list[PromptCandidate]) -> list[PromptCandidate]:
    """First occurrence of each prompt text, order kept."""
    seen: set[str] = set()
    out = []
    for c in cands:
        if c.prompt not in seen:
            seen.add(c.prompt)
            out.append(c)
    return out


def split_by_group(cands: list[PromptCandidate], n_train: int, n_heldout: int,
                   seed: int) -> tuple[list[PromptCandidate], list[PromptCandidate]]:
    """(train, heldout): held-out groups drawn at random, train filled by priority then at random.

    Deterministic for a given candidate order and seed. Either side may come out short when
    there are not enough candidates; the caller decides whether that is an error.
    """
    if n_train < 0 or n_heldout < 0:
        raise ValueError(f"n_train {n_train} and n_heldout {n_heldout} must be >= 0")
    rng = random.Random(seed)
    groups: dict[str, list[PromptCandidate]] = {}
    for c in dedupe(cands):
        groups.setdefault(c.group, []).append(c)
    order = list(groups)  # insertion order: deterministic, unlike set iteration
    rng.shuffle(order)

    heldout: list[PromptCandidate] = []
    rest = []
    for g in order:
        if len(heldout) < n_heldout:
            heldout.extend(groups[g][: n_heldout - len(heldout)])  # a group's leftovers are dropped
        else:
            rest.append(g)
    rest.sort(key=lambda g: min(c.priority for c in groups[g]))  # stable: random within a priority

    train: list[PromptCandidate] = []
    for g in rest:
        if len(train) >= n_train:
            break
        train.extend(groups[g][: n_train - len(train)])
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout
