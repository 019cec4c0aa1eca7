"""A token n-gram prior that makes the draft tree's children depend on their ancestors' tokens.

Why: the head drafts every depth in one forward with MASK inputs, so row d is one distribution
for ALL depth-d nodes, whatever tokens their path drafted. The tree then offers the same children
under every parent, including continuations the target never writes after that parent. The
target's own answers say which successors each token (and each token pair) takes: this module
counts bigrams and trigrams over them and scores a candidate child t under parent p and
grandparent g (the root's grandparent is the committed token before the anchor) by

    bonus(g, p, t) = weight  * max(log P2(t | p) / P1(t),     -clip)     if p was seen
                   + weight3 * max(log P3(t | g, p) / P2(t | p), -clip)  if (g, p) was seen

    P1(t)       = (c(t) + 1) / (N + V)
    P2(t | p)   = (c(p, t) + beta * P1(t)) / (c(p) + beta)
    P3(t | g,p) = (c(g, p, t) + beta3 * P2(t | p)) / (c(g, p) + beta3)

(pointwise mutual information of the pair, then what the grandparent adds; the pseudo-counts
shrink rare contexts towards no opinion). The tree builder (core/tree.py,
`build_tree_from_top(prior=...)`) takes each node's children as the `width` best of the row's
candidate pool by min(0, draft log-prob + bonus): capped at 0 so a path's score never rises with
depth (measured: uncapped bonuses let n-gram chains run deep and starve the tree's breadth).

Lossless by construction: the prior only chooses WHICH candidate nodes are verified; the target
verifies every node and the acceptance rules are unchanged.

Stored as an optional file beside the head (`pair_prior.safetensors`: int32 `bigram` [n2, 3] and
`trigram` [n3, 4] rows of (tokens..., count), int64 `unigram` [V]; the settings it was tuned with
in the file's metadata), so the published layout is untouched. `python -m launch.build_pair_prior`
writes it from regenerated answers.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from itertools import repeat
from operator import add

import torch

FILE_NAME = "pair_prior.safetensors"
_KEYS = ("bigram", "trigram", "unigram")


@dataclass(frozen=True)
class PriorSettings:
    weight: float = 0.5   # of the bigram term
    weight3: float = 0.5  # of the trigram term
    beta: float = 10.0    # pseudo-counts of P2
    beta3: float = 2.0    # pseudo-counts of P3
    clip: float = 8.0     # each term is at least -clip
    pool: int = 32        # candidates per row the tree chooses each node's children from

    def __post_init__(self):
        for f in ("weight", "weight3", "clip"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"pair prior {f} {v!r} must be a finite number >= 0")
        for f in ("beta", "beta3"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"pair prior {f} {v!r} must be a finite number > 0 (pseudo-counts)")
        if not (isinstance(self.pool, int) and self.pool >= 1):
            raise ValueError(f"pair prior pool {self.pool!r} must be an integer >= 1")

    def to_metadata(self) -> dict[str, str]:
        return {k: repr(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str] | None) -> "PriorSettings":
        kw = {}
        for f in fields(cls):
            if meta and f.name in meta:
                kw[f.name] = int(meta[f.name]) if f.name == "pool" else float(meta[f.name])
        return cls(**kw)


class PairPrior:
    """n-gram bonus of candidate children; see the module docstring."""

    def __init__(self, bigram: torch.Tensor, trigram: torch.Tensor, unigram: torch.Tensor,
                 settings: PriorSettings | None = None):
        if unigram.dim() != 1 or unigram.shape[0] < 1:
            raise ValueError(f"unigram {tuple(unigram.shape)} must be a non-empty 1-D count table")
        vocab = unigram.shape[0]
        for name, t, cols in (("bigram", bigram, 3), ("trigram", trigram, 4)):
            if t.dim() != 2 or t.shape[1] != cols:
                raise ValueError(f"{name} {tuple(t.shape)} must be [n, {cols}] rows of (tokens..., count)")
            if t.numel() and (int(t[:, :-1].min()) < 0 or int(t[:, :-1].max()) >= vocab):
                raise ValueError(f"{name} token ids must lie in [0, {vocab}) (the unigram table's length)")
            if t.numel() and int(t[:, -1].min()) < 1:
                raise ValueError(f"{name} counts must be >= 1")
        if int(unigram.min()) < 0:
            raise ValueError("unigram counts must be >= 0")
        self.settings = settings or PriorSettings()
        self.vocab_size = vocab
        self.unigram = unigram.to(torch.int64)
        self.bigram, self.trigram = bigram.to(torch.int32), trigram.to(torch.int32)
        total = int(self.unigram.sum())
        self._log_p1 = torch.log((self.unigram.double() + 1) / (total + vocab)).tolist()
        self._terms: tuple | None = None  # the lookup tables of `bonus`, built by `prepare`
        self._counts: tuple | None = None  # the context tables of `node_logprobs`, built on first use

    def prepare(self) -> "PairPrior":
        """Build the lookup tables `bonus` reads now (its first call builds them otherwise; about a
        second for the SmolLM2 head's). Decoders do it when they load the head (core/checkpoint.py),
        so no request pays for it; a startup check that only validates the file does not."""
        if self._terms is None:
            self._terms = self._tabulate()
        return self

    def _tabulate(self) -> tuple:
        """Every weighted, clipped term `bonus` can add, computed once from the counts: per counted
        (p, t) and (g, p, t), and per context the term of a successor it never saw. `bonus` then
        only looks them up and adds, so a lookup gives the same float as the formula.
        Returns (term2, unseen2, term3, unseen3)."""
        s, lp1 = self.settings, self._log_p1
        log, exp = math.log, math.exp
        w2, w3, clip = s.weight, s.weight3, -s.clip
        succ2: dict[int, dict[int, int]] = {}
        for p, t, c in self.bigram.tolist():
            succ2.setdefault(p, {})[t] = c
        term2: dict[int, dict[int, float]] = {}  # p -> {t: w2 * max(log P2/P1, -clip)}
        unseen2: dict[int, float] = {}  # p -> the same for a successor never counted after p
        ratio2: dict[tuple[int, int], float] = {}  # log P2(t | p) / P1(t) of the counted pairs
        unseen_ratio: dict[int, float] = {}
        for p, succ in succ2.items():
            log_den2 = log(sum(succ.values()) + s.beta)
            unseen = unseen_ratio[p] = log(s.beta) - log_den2  # P2 = beta P1 / (c(p) + beta) for every unseen t
            unseen2[p] = w2 * max(unseen, clip)
            terms = term2[p] = {}
            for t, c in succ.items():
                r = ratio2[p, t] = log(c * exp(-lp1[t]) + s.beta) - log_den2
                terms[t] = w2 * max(r, clip)
        succ3: dict[tuple[int, int], dict[int, int]] = {}
        for g, p, t, c in self.trigram.tolist():
            succ3.setdefault((g, p), {})[t] = c
        term3: dict[tuple[int, int], dict[int, float]] = {}  # (g, p) -> {t: w3 * max(log P3/P2, -clip)}
        unseen3: dict[tuple[int, int], float] = {}
        for ctx, succ in succ3.items():
            p = ctx[1]
            if p not in unseen_ratio:  # `bonus` has no opinion after a parent without bigrams
                continue
            log_den3 = log(sum(succ.values()) + s.beta3)
            unseen3[ctx] = w3 * max(log(s.beta3) - log_den3, clip)
            terms = term3[ctx] = {}
            for t, c in succ.items():  # counted answers: (g, p, t) implies (p, t); a hand-made table may not
                r = log(c * exp(-(ratio2.get((p, t), unseen_ratio[p]) + lp1[t])) + s.beta3) - log_den3
                terms[t] = w3 * max(r, clip)
        return term2, unseen2, term3, unseen3

    def __len__(self) -> int:
        return int(self.bigram.shape[0])

    def with_settings(self, **changes) -> "PairPrior":
        """The same counts under other settings."""
        return PairPrior(self.bigram, self.trigram, self.unigram, PriorSettings(**{**asdict(self.settings), **changes}))

    # ---- scores ---------------------------------------------------------------------------

    def bonus(self, grandparent: int | None, parent: int, tokens: list[int]) -> list[float]:
        """What the tree builder adds to each candidate child's draft log-prob (before the cap)."""
        s = self.settings
        term2, unseen2, term3, unseen3 = self._terms or self.prepare()._terms
        terms2 = term2.get(parent)
        if terms2 is None or (s.weight == 0 and s.weight3 == 0):
            return [0.0] * len(tokens)
        n = len(tokens)  # map over the C lookups: this runs for every node a tree opens
        out = list(map(terms2.get, tokens, repeat(unseen2[parent], n)))
        if grandparent is None or not s.weight3:
            return out
        terms3 = term3.get((grandparent, parent))
        if terms3 is None:
            return out
        return list(map(add, out, map(terms3.get, tokens, repeat(unseen3[grandparent, parent], n))))

    def flat_tables(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`bonus`'s lookup tables as (int64 keys, float64 terms) pairs, the floats it adds: bigram
        terms keyed p*V + t, the unseen-successor term of each bigram context keyed p, trigram
        terms keyed (g*V + p)*V + t, the unseen term of each trigram context keyed g*V + p
        (V = vocab_size). For the compiled tree builder (core/tree_native.py)."""
        term2, unseen2, term3, unseen3 = self._terms or self.prepare()._terms
        v = self.vocab_size
        if v ** 3 >= 2 ** 63:
            raise ValueError(f"a vocabulary of {v} tokens makes trigram keys overflow int64")

        def table(pairs) -> tuple[torch.Tensor, torch.Tensor]:
            keys, vals = [], []
            for key, x in pairs:
                keys.append(key)
                vals.append(x)
            return torch.tensor(keys, dtype=torch.int64), torch.tensor(vals, dtype=torch.float64)

        return [table((p * v + t, x) for p, terms in term2.items() for t, x in terms.items()),
                table(unseen2.items()),
                table(((g * v + p) * v + t, x) for (g, p), terms in term3.items() for t, x in terms.items()),
                table((g * v + p, x) for (g, p), x in unseen3.items())]

    # ---- probabilities of tree nodes --------------------------------------------------------

    def _context_counts(self) -> tuple:
        """(per parent: (its bigram total, {successor: count}), per (grandparent, parent): the same
        for trigrams), built once."""
        if self._counts is None:
            bi: dict[int, dict[int, int]] = {}
            for p, t, c in self.bigram.tolist():
                bi.setdefault(p, {})[t] = c
            tri: dict[tuple[int, int], dict[int, int]] = {}
            for g, p, t, c in self.trigram.tolist():
                tri.setdefault((g, p), {})[t] = c
            self._counts = ({p: (sum(x.values()), x) for p, x in bi.items()},
                            {k: (sum(x.values()), x) for k, x in tri.items()})
        return self._counts

    def log_prob(self, grandparent: int | None, parent: int, token: int) -> float:
        """log P3(token | grandparent, parent) of the module docstring where that context was
        counted, else log P2(token | parent) (P1 where the parent was never counted either): the
        smoothed probability the target's answers give the token after its two predecessors, a
        proper distribution over the vocabulary in every context. Uncapped, unlike the tree's
        scores."""
        s = self.settings
        bi, tri = self._context_counts()
        p1 = math.exp(self._log_p1[token])
        total, succ = bi.get(parent, (0, None))
        p2 = ((succ.get(token, 0) if succ else 0) + s.beta * p1) / (total + s.beta)
        ctx = tri.get((grandparent, parent)) if grandparent is not None else None
        if ctx is None:
            return math.log(p2)
        total3, succ3 = ctx
        return math.log((succ3.get(token, 0) + s.beta3 * p2) / (total3 + s.beta3))

    def node_logprobs(self, tree, prev_token: int | None) -> torch.Tensor:
        """[n] float64 `log_prob` of every node of a draft tree (core/tree.DraftTree) given its
        parent's and grandparent's tokens; the root's parent is `prev_token` (the committed token
        before the anchor, None = unknown: depth-1 nodes then use the bigram); the root gets 0.
        The feature of the expert scheduler's acceptance model (conditional_acceptance.NGRAM_BINS)."""
        tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
        out = [0.0] * len(tokens)
        for v in range(1, len(tokens)):
            p = parents[v]
            g = parents[p]
            out[v] = self.log_prob(tokens[g] if g >= 0 else prev_token, tokens[p], tokens[v])
        return torch.tensor(out, dtype=torch.float64)

    # ---- building -------------------------------------------------------------------------

    @classmethod
    def from_sequences(cls, seqs: Iterable[list[int]], vocab_size: int,
                       settings: PriorSettings | None = None) -> "PairPrior":
        """Count the bigrams and trigrams of each sequence, and every token after the first."""
        bi: Counter = Counter()
        tri: Counter = Counter()
        uni = torch.zeros(vocab_size, dtype=torch.int64)
        for seq in seqs:
            seq = list(seq)
            if any(not 0 <= t < vocab_size for t in seq):
                raise ValueError(f"a sequence holds a token id outside [0, {vocab_size})")
            bi.update(zip(seq[:-1], seq[1:]))
            tri.update(zip(seq[:-2], seq[1:-1], seq[2:]))
            if len(seq) > 1:
                uni += torch.bincount(torch.tensor(seq[1:]), minlength=vocab_size)

        def table(counter: Counter, cols: int) -> torch.Tensor:
            rows = [(*k, c) for k, c in sorted(counter.items())]
            return torch.tensor(rows, dtype=torch.int32).reshape(-1, cols)

        return cls(table(bi, 3), table(tri, 4), uni, settings)

    # ---- files ----------------------------------------------------------------------------

    def save(self, folder: str) -> str:
        from safetensors.torch import save_file

        path = os.path.join(folder, FILE_NAME)
        save_file({"bigram": self.bigram.contiguous(), "trigram": self.trigram.contiguous(),
                   "unigram": self.unigram.contiguous()}, path, metadata=self.settings.to_metadata())
        return path

    @classmethod
    def load(cls, folder: str, **overrides) -> "PairPrior | None":
        """The folder's prior with the settings stored in it (keyword arguments override them),
        or None when the folder has none. ValueError on a bad file."""
        path = os.path.join(folder, FILE_NAME)
        if not os.path.isfile(path):
            return None
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata()
                t = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # a truncated or foreign file
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
        if tuple(sorted(t)) != _KEYS:
            raise ValueError(f"{path}: expected tensors {list(_KEYS)}, found {sorted(t)}")
        try:
            settings = PriorSettings(**{**asdict(PriorSettings.from_metadata(meta)), **overrides})
            return cls(t["bigram"], t["trigram"], t["unigram"], settings)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from e

    def check(self, vocab_size: int) -> list[str]:
        """Problems using this prior with a target of `vocab_size` tokens."""
        if self.vocab_size != vocab_size:
            return [f"pair prior covers {self.vocab_size} tokens, the target's vocabulary has {vocab_size}"]
        return []
