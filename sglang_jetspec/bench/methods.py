"""Which configurations a benchmark measures, and which SGLang server runs each.

Methods:
  ar             no speculation (the baseline every speedup is taken against)
  jetspec        the causal head, one configuration per budget (per-request `custom_params`
                 lower the server's budget, so ONE server runs every budget)
  chain          the same head and server as a chain of its full depth (width 1)
  bidirectional  the bidirectional (DFlash-style) head as a tree, per budget: its own server
  ngram          SGLang's built-in NGRAM speculation (no head)
Budget `auto`: jetspec on a server whose verify width is chosen per batch by the adaptive
controller (SGLANG_JETSPEC_BUDGET=adaptive, at most the largest static budget); the static
budgets run on a server pinned to static widths.
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("ar", "jetspec", "chain", "bidirectional", "ngram")
NGRAM_DRAFT_TOKENS = 8  # SGLang NGRAM's tree size on its server (its own default is larger)
AUTO_SERVER = "jetspec-auto"
HEAD_SERVERS = ("jetspec", "bidirectional", AUTO_SERVER)  # servers with a JETSPEC head


@dataclass(frozen=True)
class Config:
    method: str
    server: str                      # key of the server that runs it (see servers_needed)
    budget: int | None = None        # tree nodes including the root
    width: int | None = None         # per-request width override (chain: 1)

    @property
    def label(self) -> str:
        if self.server == AUTO_SERVER:
            return f"{self.method}@auto"
        return self.method if self.budget is None else f"{self.method}@{self.budget}"

    def custom_params(self) -> dict | None:
        """The request's `custom_params` (JETSPEC per-request tree settings), or None."""
        if self.server not in ("jetspec", "bidirectional") or self.budget is None:
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


def parse_budgets(text: str) -> tuple[list[int], bool]:
    """(static budgets, whether `auto` was asked for)."""
    items = parse_list(text, "budgets")
    auto = "auto" in items
    out = [parse_int(b, "budget", 2, " (expected e.g. 8,16,32,64)", " (1 is plain decoding: use method ar)")
           for b in items if b != "auto"]
    if auto and not out:
        raise ValueError("--budgets auto needs at least one static budget as well: the adaptive "
                         "server's largest width is the largest static budget")
    return sorted(set(out)), auto


def parse_batch_sizes(text: str) -> list[int]:
    return sorted({parse_int(b, "batch size", 1) for b in parse_list(text, "batch-sizes")})


def parse_mixed_load(text: str) -> list[int]:
    """Concurrency phases in the order given (a load that changes over time)."""
    return [parse_int(b, "mixed-load concurrency", 1) for b in parse_list(text, "mixed-load")]


def plan_configs(methods: list[str], budgets: list[int], depth: int, auto: bool = False) -> list[Config]:
    """Configurations in measurement order; `depth` = the head's maximum depth (block_size - 1)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {list(METHODS)}")
    if "ar" not in methods:
        methods = ["ar"] + list(methods)  # speedups and output checks are taken against ar
    out = []
    for m in methods:
        if m in ("ar", "ngram"):
            out.append(Config(m, m))
        elif m == "chain":
            out.append(Config(m, "jetspec", budget=depth + 1, width=1))
        else:
            out.extend(Config(m, m, budget=b) for b in budgets)
            if auto and m == "jetspec":
                out.append(Config(m, AUTO_SERVER))
    return out


def servers_needed(configs: list[Config]) -> list[str]:
    return list(dict.fromkeys(c.server for c in configs))


def max_budget(configs: list[Config], server: str) -> int | None:
    if server == AUTO_SERVER:  # the adaptive server may go up to the largest static budget
        server = "jetspec"
    vals = [c.budget for c in configs if c.server == server and c.budget is not None]
    return max(vals) if vals else None
