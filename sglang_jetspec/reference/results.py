"""What one generation reports, shared by every engine (``ar``, ``reference``, later ``sglang``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GenerationResult:
    output_ids: list[int]
    text: str = ""
    rounds: int = 0                      # target forwards after prefill
    accepted: list[int] = field(default_factory=list)  # tokens committed per round
    seconds: float = 0.0
    finish_reason: str = "length"        # "length" | "stop" (EOS)

    def to_json(self) -> dict:
        return asdict(self)


def truncate_at_stop(tokens: list[int], room: int, eos_ids: set[int]) -> tuple[list[int], bool]:
    """Cut a round's committed tokens at ``room`` tokens or just after the first EOS.

    Returns (kept tokens, whether an EOS ended the sequence)."""
    kept: list[int] = []
    for tok in tokens[:room]:
        kept.append(tok)
        if tok in eos_ids:
            return kept, True
    return kept, False
