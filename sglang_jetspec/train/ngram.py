"""Bigram / trigram next-token tables from the training answers: the baseline a head must beat.

A head's depth-1 slot sees the anchor token (and far more), so it should at least match the
best guess from the anchor alone. training-notes.md: a prototype stayed BELOW this baseline for
thousands of steps, which signals a bug or a bad start rather than a lack of data.
"""

from __future__ import annotations

from collections import Counter, defaultdict


def _answer_tokens(seq) -> list[int]:
    """The last prompt token plus the answer: the n-gram contexts an anchor can have."""
    return seq.ids[max(0, seq.prompt_len - 2):].tolist()


class NgramTable:
    """Most frequent next token after each (n-1)-token context, backing off to shorter contexts."""

    def __init__(self, train_seqs, n: int):
        if n < 1:
            raise ValueError(f"n-gram order {n} must be >= 1")
        self.n = n
        counts = [defaultdict(Counter) for _ in range(n)]  # counts[k][context of k tokens]
        for seq in train_seqs:
            toks = _answer_tokens(seq)
            start = len(toks) - (len(seq.ids) - seq.prompt_len)  # index of the first answer token
            for t in range(max(start, 1), len(toks)):
                for k in range(n):
                    if t - k >= 0:
                        counts[k][tuple(toks[t - k:t])][toks[t]] += 1
        self.best = [{ctx: c.most_common(1)[0][0] for ctx, c in level.items()} for level in counts]

    def predict(self, context: list[int]) -> int:
        for k in range(self.n - 1, -1, -1):
            if len(context) >= k:
                tok = self.best[k].get(tuple(context[len(context) - k:]) if k else ())
                if tok is not None:
                    return tok
        return 0

    def accuracy(self, val_seqs) -> float:
        """Share of answer tokens after the first (the ones depth-1 slots predict) guessed right."""
        hit = total = 0
        for seq in val_seqs:
            ids = seq.ids.tolist()
            for t in range(seq.prompt_len + 1, len(ids)):
                hit += self.predict(ids[max(0, t - self.n + 1):t]) == ids[t]
                total += 1
        return hit / max(total, 1)
