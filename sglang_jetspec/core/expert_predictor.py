"""Predict, before verification, which experts each draft-tree node will activate per MoE layer.

Why: the expert-aware scheduler (`expert_aware_tree`) prices a node by the experts it would newly
activate in the verify forward, but the router only runs inside that forward. What the worker
does know is how the target routed every token it has already verified (SGLang can return the
routed expert ids per token). A token's routing is dominated by the token itself (the router reads
the residual stream, whose largest component early on is the token embedding), so an online
token -> expert affinity table is a cheap, decent guess; the token before it (for a tree node: its
parent's token) sharpens it where that pair has been seen often enough.

The prediction is approximate by nature (routing also depends on the wider context), which is
fine: the scheduler only chooses WHICH candidate nodes to verify, and verification stays exact.

Model (per layer l, over experts e, as activation rates that sum to top_k):
    rate_global[l, e]       = decayed share of verified tokens routed to e
    rate_token[t][l, e]     = (count_t[l, e] + s * rate_global[l, e]) / (n_t + s)
    rate_pair[(u, t)][l, e] = (count_ut[l, e] + s * rate_token[t][l, e]) / (n_ut + s)
with s = `prior_strength` pseudo-observations, so an unseen token falls back to the layer's
global frequency and a rare one leans on it. The pair level is used only once the pair was seen
`bigram_min_count` (decayed) times. The predicted set is the top_k of the rate.

Counts decay by 0.5 per `half_life` verified tokens, so the table follows drift. The decay is
lazy (new observations are added with a growing weight and the table is rescaled rarely), so an
update touches only the rows of the tokens it sees. Rows live in tables keyed by token id (and
by pair); `max_rows` bounds each table (the lightest row is dropped when full), since a dense
[vocab, L, E] table would not fit for a 151k-vocab, 48-layer, 128-expert target: a row is
L * E * 8 bytes: 49 KB there, so the default 4096 rows cost up to 200 MB per table; 384 bytes
for the embedded 6-layer, 8-expert target.

Everything is host-side torch (float64 counts): a tree has a few hundred nodes, an update a few
hundred tokens.
"""

from __future__ import annotations

import math

import torch

_RESCALE_AT = 1e30  # renormalise the lazy-decay weights long before float64 overflows
_LOG10_RESCALE = 30.0


class _RowTable:
    """Decayed [L, E] count rows keyed by an int, each with its observation weight (stored units)."""

    def __init__(self, num_layers: int, num_experts: int, max_rows: int):
        self.max_rows = max_rows
        self.slot: dict[int, int] = {}
        self.key_of: list[int] = []  # slot -> key
        self.counts = torch.zeros(16, num_layers, num_experts, dtype=torch.float64)  # [cap, L, E]
        self.weight = torch.zeros(16, dtype=torch.float64)  # [cap]

    def _new_slot(self, key: int) -> int:
        if len(self.key_of) >= self.max_rows:  # full: reuse the lightest row
            s = int(self.weight[: len(self.key_of)].argmin())
            del self.slot[self.key_of[s]]
            self.key_of[s] = key
            self.counts[s].zero_()
            self.weight[s] = 0.0
        else:
            s = len(self.key_of)
            self.key_of.append(key)
            if s >= self.counts.shape[0]:  # double the capacity
                self.counts = torch.cat([self.counts, torch.zeros_like(self.counts)])
                self.weight = torch.cat([self.weight, torch.zeros_like(self.weight)])
        self.slot[key] = s
        return s

    def add(self, keys: list[int], rows: torch.Tensor, weights: torch.Tensor) -> None:
        """rows [m, L, E] (already weighted) and weights [m] added to the rows of keys [m]."""
        slots = []
        for k in keys:  # one at a time: an eviction may reuse a slot named earlier in this call
            slots.append(self.slot[k] if k in self.slot else self._new_slot(k))
        idx = torch.tensor(slots, dtype=torch.long)
        self.counts.index_add_(0, idx, rows)
        self.weight.index_add_(0, idx, weights)

    def lookup(self, keys: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts [n, L, E], weight [n]) in stored units; zeros for unseen keys."""
        slots = torch.tensor([self.slot.get(k, -1) for k in keys], dtype=torch.long)
        seen = slots >= 0
        safe = slots.clamp_min(0)
        zero = torch.zeros((), dtype=torch.float64)
        return torch.where(seen[:, None, None], self.counts[safe], zero), torch.where(seen, self.weight[safe], zero)

    def rescale(self, factor: float) -> None:
        self.counts.mul_(factor)
        self.weight.mul_(factor)


class ExpertPredictor:
    """Online token (+ parent token) -> per-layer expert predictor. `update` with verified tokens
    and the experts the target routed them to; `predict` for candidate tree nodes."""

    def __init__(self, num_layers: int, num_experts: int, top_k: int, half_life: float | None = 20000.0,
                 prior_strength: float = 1.0, use_bigram: bool = True, bigram_min_count: float = 2.0,
                 max_rows: int = 4096):
        if num_layers < 1 or num_experts < 1:
            raise ValueError(f"num_layers {num_layers} and num_experts {num_experts} must be >= 1")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k {top_k} must be in [1, num_experts = {num_experts}]")
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life {half_life} must be > 0 tokens (None = never forget)")
        if not prior_strength > 0:
            raise ValueError(f"prior_strength {prior_strength} must be > 0 pseudo-observations")
        if max_rows < 1:
            raise ValueError(f"max_rows {max_rows} must be >= 1")
        self.L, self.E, self.K = num_layers, num_experts, top_k
        self.prior_strength, self.use_bigram = float(prior_strength), use_bigram
        self.bigram_min_count = float(bigram_min_count)
        self.growth = 1.0 if half_life is None else 2.0 ** (1.0 / half_life)  # per verified token
        self._scale = 1.0  # weight of one new observation in stored units (lazy decay)
        self._global = torch.zeros(num_layers, num_experts, dtype=torch.float64)  # [L, E] stored units
        self._global_weight = 0.0
        self._tokens = _RowTable(num_layers, num_experts, max_rows)
        self._pairs = _RowTable(num_layers, num_experts, max_rows)
        self.observed = 0  # verified tokens seen

    # ---- learning ---------------------------------------------------------------------------

    def _onehot(self, routed: torch.Tensor) -> torch.Tensor:
        """routed [m, L, K] (ids, -1 = none) -> [m, L, E] float64 incidence (duplicates count once)."""
        ids = routed.detach().to("cpu").long()
        hit = torch.zeros(*ids.shape[:2], self.E + 1, dtype=torch.float64)
        hit.scatter_(2, torch.where(ids >= 0, ids, self.E), 1.0)
        return hit[..., : self.E]

    def update(self, token_ids: torch.Tensor, routed: torch.Tensor,
               prev_token_ids: torch.Tensor | None = None) -> None:
        """Learn from verified tokens: token_ids [m], routed [m, L, K] the experts the target chose
        for them, prev_token_ids [m] the token before each (-1 = unknown; None = no pair data).
        Tokens are treated as arriving in order (decay advances per token)."""
        m = _check_ids(token_ids, "token_ids")
        if routed.dim() != 3 or tuple(routed.shape[:2]) != (m, self.L) or routed.shape[2] < 1:
            raise ValueError(f"routed shape {tuple(routed.shape)} must be [m = {m}, L = {self.L}, K]")
        if routed.numel() and int(routed.max()) >= self.E:
            raise ValueError(f"routed expert id {int(routed.max())} must be < num_experts {self.E}")
        if m == 0:
            return
        chunk = m if self.growth == 1.0 else max(1, int(_LOG10_RESCALE / math.log10(self.growth)))
        if m > chunk:  # keep growth ** m finite: learn in order, chunk by chunk
            for i in range(0, m, chunk):
                part = None if prev_token_ids is None else prev_token_ids[i: i + chunk]
                self.update(token_ids[i: i + chunk], routed[i: i + chunk], part)
            return
        if self._scale * self.growth ** m > _RESCALE_AT:
            self._rescale()
        # token j (0-based) gets weight scale * growth^(j+1) in stored units: later tokens count more
        steps = torch.arange(1, m + 1, dtype=torch.float64)
        w = self._scale * self.growth ** steps  # [m]
        onehot = self._onehot(routed) * w[:, None, None]  # [m, L, E]
        toks = token_ids.tolist()
        self._global += onehot.sum(0)
        self._global_weight += float(w.sum())
        self._tokens.add(toks, onehot, w)
        if self.use_bigram and prev_token_ids is not None:
            if _check_ids(prev_token_ids, "prev_token_ids", allow_unknown=True) != m:
                raise ValueError(f"prev_token_ids has {prev_token_ids.numel()} entries for {m} tokens")
            prev = prev_token_ids.tolist()
            known = [j for j in range(m) if prev[j] >= 0]
            if known:
                keys = [self._pair_key(prev[j], toks[j]) for j in known]
                idx = torch.tensor(known)
                self._pairs.add(keys, onehot[idx], w[idx])
        self._scale *= self.growth ** m
        self.observed += m

    def update_sequence(self, token_ids: torch.Tensor, routed: torch.Tensor, prev_token: int = -1) -> None:
        """`update` for a contiguous run of verified tokens (the pair context is the run shifted by
        one; prev_token is the token before the run, -1 if unknown)."""
        _check_ids(token_ids, "token_ids")
        prev = torch.cat([torch.tensor([prev_token]), token_ids.detach().cpu().long()[:-1]])
        self.update(token_ids, routed, prev[: token_ids.numel()])

    def _rescale(self) -> None:
        f = 1.0 / self._scale
        self._global.mul_(f)
        self._global_weight *= f
        self._tokens.rescale(f)
        self._pairs.rescale(f)
        self._scale = 1.0

    def _pair_key(self, prev: int, tok: int) -> int:
        return (prev << 32) | tok

    # ---- prediction ---------------------------------------------------------------------------

    def global_rates(self) -> torch.Tensor:
        """[L, E] activation rate of each expert over recent verified tokens (uniform K/E before data)."""
        if self._global_weight <= 0:
            return torch.full((self.L, self.E), self.K / self.E, dtype=torch.float64)
        return self._global / self._global_weight

    def predict_rates(self, token_ids: torch.Tensor, prev_token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[n, L, E] float64: estimated chance each node's token activates each expert."""
        n = _check_ids(token_ids, "token_ids")
        s = self.prior_strength * self._scale  # the prior in stored units
        toks = token_ids.tolist()
        counts, weight = self._tokens.lookup(toks)  # [n, L, E], [n]
        rate = (counts + s * self.global_rates()) / (weight + s)[:, None, None]  # [n, L, E]
        if self.use_bigram and prev_token_ids is not None:
            if _check_ids(prev_token_ids, "prev_token_ids", allow_unknown=True) != n:
                raise ValueError(f"prev_token_ids has {prev_token_ids.numel()} entries for {n} tokens")
            keys = [self._pair_key(p, t) if p >= 0 else -1 for p, t in zip(prev_token_ids.tolist(), toks)]
            pc, pw = self._pairs.lookup(keys)
            use = pw >= self.bigram_min_count * self._scale  # decayed pair count high enough
            pair_rate = (pc + s * rate) / (pw + s)[:, None, None]
            rate = torch.where(use[:, None, None], pair_rate, rate)
        return rate

    def predict(self, token_ids: torch.Tensor, prev_token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[n, L, K] long: the top_k experts per layer predicted for each token (prev_token_ids [n]:
        the token before each, -1 = unknown, for the pair level)."""
        return self.predict_rates(token_ids, prev_token_ids).topk(self.K, dim=-1).indices

    def predict_global(self, n: int) -> torch.Tensor:
        """[n, L, K] the baseline: every token gets each layer's globally most used experts."""
        top = self.global_rates().topk(self.K, dim=-1).indices  # [L, K]
        return top.expand(n, -1, -1).clone()

    def predict_tree(self, tree, root_prev_token: int = -1) -> torch.Tensor:
        """[n, L, K] for a DraftTree's nodes, root included (the verify forward routes it too);
        each node's pair context is its parent's token (root_prev_token for the root)."""
        tokens = tree.tokens.detach().cpu().long()
        parents = tree.parents.detach().cpu().long()
        prev = torch.where(parents >= 0, tokens[parents.clamp_min(0)], torch.tensor(root_prev_token))
        return self.predict(tokens, prev)

    def predict_trees(self, trees, root_prev_tokens) -> list[torch.Tensor]:
        """[predict_tree(t, p) for each tree and root_prev_token]: the same predictions from ONE
        lookup over the batch's nodes (per-tree calls cost ~0.3 ms each on a CPU host, ~10 ms a
        round for 32 trees)."""
        if len(trees) != len(root_prev_tokens):
            raise ValueError(f"{len(root_prev_tokens)} root_prev_tokens for {len(trees)} trees")
        if not trees:
            return []
        tokens, prevs = [], []
        for tree, root_prev in zip(trees, root_prev_tokens):
            t = tree.tokens.detach().cpu().long()
            par = tree.parents.detach().cpu().long()
            tokens.append(t)
            prevs.append(torch.where(par >= 0, t[par.clamp_min(0)], torch.tensor(root_prev)))
        out = self.predict(torch.cat(tokens), torch.cat(prevs))
        return list(out.split([t.numel() for t in tokens]))


def _check_ids(ids: torch.Tensor, name: str, allow_unknown: bool = False) -> int:
    if ids.dim() != 1 or ids.is_floating_point():
        raise ValueError(f"{name} must be a 1-D integer tensor [m], got shape {tuple(ids.shape)} dtype {ids.dtype}")
    low = -1 if allow_unknown else 0
    if ids.numel() and int(ids.min()) < low:
        raise ValueError(f"{name} has id {int(ids.min())}, expected >= {low}")
    return int(ids.numel())


def expert_sets(ids: torch.Tensor, num_experts: int) -> torch.Tensor:
    """[..., K] ids (-1 = none) -> [..., E] bool membership."""
    ids = ids.long()
    hit = torch.zeros(*ids.shape[:-1], num_experts + 1, dtype=torch.bool, device=ids.device)
    hit.scatter_(-1, torch.where(ids >= 0, ids, num_experts), True)
    return hit[..., :num_experts]


def expert_set_metrics(pred: torch.Tensor, actual: torch.Tensor) -> tuple[float, float]:
    """(precision, recall) of predicted vs actual expert sets, micro-averaged over nodes and layers:
    |pred & actual| / |pred| and / |actual|. pred [n, L, K'], actual [n, L, K]; -1 slots and
    repeated ids are ignored. With K' = K and full top-k sets the two are equal."""
    if pred.dim() != 3 or actual.dim() != 3 or pred.shape[:2] != actual.shape[:2]:
        raise ValueError(f"pred {tuple(pred.shape)} and actual {tuple(actual.shape)} must be [n, L, K] "
                         "with the same n and L")
    E = int(max(int(pred.max()) if pred.numel() else 0, int(actual.max()) if actual.numel() else 0)) + 1
    return _precision_recall(expert_sets(pred, E), expert_sets(actual, E))


def expert_union_metrics(pred: torch.Tensor, actual: torch.Tensor) -> tuple[float, float]:
    """(precision, recall) of the per-layer expert UNION of a group of nodes (what the verify cost
    depends on): pred [n, L, K'], actual [n, L, K]."""
    if pred.dim() != 3 or actual.dim() != 3 or pred.shape[:2] != actual.shape[:2]:
        raise ValueError(f"pred {tuple(pred.shape)} and actual {tuple(actual.shape)} must be [n, L, K] "
                         "with the same n and L")
    E = int(max(int(pred.max()) if pred.numel() else 0, int(actual.max()) if actual.numel() else 0)) + 1
    return _precision_recall(expert_sets(pred, E).any(0), expert_sets(actual, E).any(0))


def _precision_recall(p: torch.Tensor, a: torch.Tensor) -> tuple[float, float]:
    both = float((p & a).sum())
    np_, na = float(p.sum()), float(a.sum())
    return (both / np_ if np_ else float("nan")), (both / na if na else float("nan"))
