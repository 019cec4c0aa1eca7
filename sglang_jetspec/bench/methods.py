"""Which configurations a benchmark measures, and which SGLang server runs each.

Methods:
  ar             no speculation (the baseline every speedup is taken against)
  jetspec        the causal head, one configuration per budget (per-request `custom_params`
                 lower the server's budget, so ONE server runs every budget)
  chain          the same head and server as a chain of its full depth (width 1)
  bidirectional  the bidirectional (DFlash-style) head as a tree, per budget: its own server
  ngram          SGLang's built-in NGRAM speculation (no head)
  standalone     SGLang's built-in STANDALONE speculation: a small draft model of the target's
                 vocabulary (--standalone-draft) drafts a chain of --standalone-steps tokens
Budget `auto`: jetspec on a server whose verify width is chosen per batch by the adaptive
controller (SGLANG_JETSPEC_BUDGET=adaptive, at most the largest static budget); the static
budgets run on a server pinned to static widths. `auto-maxreserve`: the same adaptive server,
but SGLang's per-step KV reserve stays at the server budget (SGLANG_JETSPEC_KV_RESERVE=max)
instead of following the width (integration/kv_reserve.py): the on/off pair of that feature.
`-fullvocab` (launch.bench --draft-vocab-off): the static budgets again on a server that drafts
over the target's whole vocabulary (SGLANG_JETSPEC_DRAFT_VOCAB=off), the on/off pair of the head
folder's draft vocabulary (core/draft_vocab.py).
`-noprior` (launch.bench --pair-prior-off): the static budgets again on a server that builds plain
best-first trees, ignoring the head folder's n-gram prior (SGLANG_JETSPEC_PAIR_PRIOR=off), the
on/off pair of core/pair_prior.py.
`ar-onednn` and `-onednn` (launch.bench --cpu-linear-onednn, CPU only): plain decoding and the
static budgets again on servers whose linear layers use packed oneDNN products instead of PyTorch's
F.linear (SGLANG_JETSPEC_CPU_LINEAR=onednn; integration/cpu_linear.py), the on/off pair of that.
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("ar", "jetspec", "chain", "bidirectional", "ngram", "standalone")
PLAIN_SERVERS = ("ar", "ngram", "standalone")  # one configuration each, no JetSpec head
NGRAM_DRAFT_TOKENS = 8  # SGLang NGRAM's tree size on its server (its own default is larger)
AUTO_SERVER = "jetspec-auto"
AUTO_MAX_RESERVE_SERVER = "jetspec-auto-maxreserve"
AUTO_SERVERS = (AUTO_SERVER, AUTO_MAX_RESERVE_SERVER)  # adaptive width
NO_EXPERT_SERVER = "jetspec-noexpert"  # static widths, expert-aware scheduling off (MoE targets)
FULL_VOCAB_SERVER = "jetspec-fullvocab"  # static widths, draft over the whole vocabulary
NO_PRIOR_SERVER = "jetspec-noprior"  # static widths, plain trees without the head's n-gram prior
ONEDNN_SERVER = "jetspec-onednn"  # static widths, packed oneDNN CPU linear layers
ONEDNN_AR = "ar-onednn"  # plain decoding, packed oneDNN CPU linear layers
ONEDNN_SERVERS = (ONEDNN_AR, ONEDNN_SERVER)
VARIANT_SERVERS = {NO_EXPERT_SERVER: "noexpert", FULL_VOCAB_SERVER: "fullvocab",
                   NO_PRIOR_SERVER: "noprior", ONEDNN_SERVER: "onednn"}  # the causal head, one switch flipped
HEAD_SERVERS = ("jetspec", "bidirectional", *VARIANT_SERVERS) + AUTO_SERVERS  # servers with a head


@dataclass(frozen=True)
class Config:
    method: str
    server: str                      # key of the server that runs it (see servers_needed)
    budget: int | None = None        # tree nodes including the root
    width: int | None = None         # per-request width override (chain: 1)

    @property
    def label(self) -> str:
        if self.server == ONEDNN_AR:
            return ONEDNN_AR
        if self.server == AUTO_SERVER:
            return f"{self.method}@auto"
        if self.server == AUTO_MAX_RESERVE_SERVER:
            return f"{self.method}@auto-maxreserve"
        if self.server in VARIANT_SERVERS:
            return f"{self.method}@{self.budget}-{VARIANT_SERVERS[self.server]}"
        return self.method if self.budget is None else f"{self.method}@{self.budget}"

    def custom_params(self) -> dict | None:
        """The request's `custom_params` (JETSPEC per-request tree settings), or None."""
        if self.server not in ("jetspec", "bidirectional", *VARIANT_SERVERS) or self.budget is None:
            return None
        tree = {"budget": self.budget}
        if self.width is not None:
            tree["width"] = self.width
        return {"jetspec": tree}


def parse_list(text: str, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ValueError(f"--{what} {text!r} names nothing")
    return items


def parse_int(item: str, name: str, minimum: int, hint: str = "", why: str = "") -> int:
    """One integer of a comma-separated option; errors name the value and the bound."""
    try:
        v = int(item)
    except ValueError:
        raise ValueError(f"{name} {item!r} is not an integer{hint}") from None
    if v < minimum:
        raise ValueError(f"{name} {v} must be >= {minimum}{why}")
    return v


AUTO_TOKENS = ("auto", "auto-maxreserve")


def parse_budgets(text: str, auto_max_width: int | None = None) -> tuple[list[int], list[str]]:
    """(static budgets, the adaptive variants asked for: `auto`, `auto-maxreserve`)."""
    items = parse_list(text, "budgets")
    autos = [a for a in AUTO_TOKENS if a in items]
    out = [parse_int(b, "budget", 2, " (expected e.g. 8,16,32,64,auto)", " (1 is plain decoding: use method ar)")
           for b in items if b not in AUTO_TOKENS]
    if autos and not out and auto_max_width is None:
        raise ValueError(f"--budgets {','.join(autos)} needs a static budget as well or --auto-max-width: the "
                         "adaptive server's largest width is the largest static budget by default")
    return sorted(set(out)), autos


def parse_batch_sizes(text: str) -> list[int]:
    return sorted({parse_int(b, "batch size", 1) for b in parse_list(text, "batch-sizes")})


def parse_mixed_load(text: str) -> list[int]:
    """Concurrency phases in the order given (a load that changes over time)."""
    return [parse_int(b, "mixed-load concurrency", 1) for b in parse_list(text, "mixed-load")]


def plan_configs(methods: list[str], budgets: list[int], depth: int, auto=(),
                 expert_off: bool = False, draft_vocab_off: bool = False, onednn_linear: bool = False,
                 pair_prior_off: bool = False) -> list[Config]:
    """Configurations in measurement order; `depth` = the head's maximum depth (block_size - 1).
    expert_off: also measure every static jetspec budget with expert-aware scheduling off
    (SGLANG_JETSPEC_EXPERT_AWARE=off; MoE targets), the on/off pair of that feature.
    draft_vocab_off: likewise with the draft over the whole vocabulary (SGLANG_JETSPEC_DRAFT_VOCAB=off).
    pair_prior_off: likewise with plain trees, the head's n-gram prior unused (SGLANG_JETSPEC_PAIR_PRIOR=off).
    onednn_linear: also ar and every static jetspec budget with packed oneDNN CPU linear layers
    (SGLANG_JETSPEC_CPU_LINEAR=onednn)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {list(METHODS)}")
    if "ar" not in methods:
        methods = ["ar"] + list(methods)  # speedups and output checks are taken against ar
    out = []
    for m in methods:
        if m in PLAIN_SERVERS:
            out.append(Config(m, m))
            if m == "ar" and onednn_linear:
                out.append(Config(m, ONEDNN_AR))
        elif m == "chain":
            out.append(Config(m, "jetspec", budget=depth + 1, width=1))
        else:
            out.extend(Config(m, m, budget=b) for b in budgets)
            if m == "jetspec" and expert_off:
                out.extend(Config(m, NO_EXPERT_SERVER, budget=b) for b in budgets)
            if m == "jetspec" and draft_vocab_off:
                out.extend(Config(m, FULL_VOCAB_SERVER, budget=b) for b in budgets)
            if m == "jetspec" and pair_prior_off:
                out.extend(Config(m, NO_PRIOR_SERVER, budget=b) for b in budgets)
            if m == "jetspec" and onednn_linear:
                out.extend(Config(m, ONEDNN_SERVER, budget=b) for b in budgets)
            if m == "jetspec":
                autos = ["auto"] if auto is True else list(auto or [])
                out += [Config(m, AUTO_SERVER if a == "auto" else AUTO_MAX_RESERVE_SERVER) for a in autos]
    return out


def servers_needed(configs: list[Config]) -> list[str]:
    return list(dict.fromkeys(c.server for c in configs))


def max_budget(configs: list[Config], server: str, auto_max_width: int | None = None) -> int | None:
    """The budget a server is started with: the largest of its configurations'. An adaptive
    server goes up to the largest static jetspec TREE budget (or auto_max_width): the chain that
    shares the static server has a budget of the head's depth + 1, which is not a tree budget the
    user asked for."""
    if server in AUTO_SERVERS:
        if auto_max_width is not None:
            return auto_max_width
        vals = [c.budget for c in configs if c.server == "jetspec" and c.method == "jetspec" and c.budget]
        return max(vals) if vals else None
    vals = [c.budget for c in configs if c.server == server and c.budget is not None]
    return max(vals) if vals else None
