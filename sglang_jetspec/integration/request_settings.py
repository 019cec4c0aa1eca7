"""Per-request tree settings: `"custom_params": {"jetspec": {"budget": B, "width": W, "depth": D}}`.

Why: one server serves requests that want different amounts of speculation (a latency-critical
request, a client that knows its text is unpredictable, a fuzz test that must cover many tree
shapes without restarting the server). Every field is optional and is an UPPER bound: the
request's tree uses min(request value, server value) for budget and depth, because the server's
flags size the KV reserve (budget) and the head's depth rows (depth). Width has no resource
behind it and is taken as given. budget 1 means no drafted node: the round commits the
target's own token only, exactly plain decoding.

Validation happens where SGLang validates sampling parameters (SamplingParams.verify, hooked in
hooks.py), so a malformed value is an HTTP 400 naming it, before the request reaches the
scheduler. The worker parses again (cheap) and never trusts unvalidated input.
"""

from __future__ import annotations

from sglang_jetspec.core.tree import limits_for_remaining
from sglang_jetspec.integration.server_args import TreeSettings

KEY = "jetspec"
FIELDS = ("budget", "width", "depth")
MAX_VALUE = 4096  # far above any real tree; rejects absurd numbers early


def parse_request_tree(custom_params) -> dict[str, int]:
    """The validated overrides of one request ({} when it sets none); ValueError names the problem."""
    if not isinstance(custom_params, dict) or KEY not in custom_params:
        return {}
    raw = custom_params[KEY]
    if not isinstance(raw, dict):
        raise ValueError(f"custom_params.{KEY} must be an object like "
                         f'{{"budget": 8, "width": 4, "depth": 6}}, got {raw!r}')
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ValueError(f"custom_params.{KEY} has unknown keys {unknown}; allowed: {list(FIELDS)}")
    out = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"custom_params.{KEY}.{name} must be an integer, got {value!r}")
        if not 1 <= value <= MAX_VALUE:
            raise ValueError(f"custom_params.{KEY}.{name} {value} must be in [1, {MAX_VALUE}]")
        out[name] = value
    return out


def resolve_tree(custom_params, server: TreeSettings) -> TreeSettings:
    """The tree settings one request's round uses: the server's, capped by the request's."""
    over = parse_request_tree(custom_params)
    return TreeSettings(budget=min(over.get("budget", server.budget), server.budget),
                        width=over.get("width", server.width),
                        depth=min(over.get("depth", server.depth), server.depth))


def cap_to_remaining(tree: TreeSettings, remaining: int | None) -> TreeSettings:
    """No drafted node deeper than the request can still commit: a round commits the accepted
    path plus one bonus token, so with `remaining` tokens left a depth over remaining - 1 is
    verify work that can never be used. It also keeps every verified position inside the
    context the request was admitted for (input + max_new_tokens), which matters at the end of
    the context window (rotary tables, KV rows). remaining None = unbounded."""
    budget, depth = limits_for_remaining(tree.budget, tree.depth, remaining)
    return TreeSettings(budget=budget, width=tree.width, depth=depth)


def needs_plain_step(sampling_params, output_len: int) -> bool:
    """Whether a request's next round must commit one token only (budget 1), to stay lossless.

    SGLang applies frequency / presence / repetition penalties and the min_new_tokens stop mask
    to every verified row from the state at the round's start, and counts only the round's last
    token into that state ("a relaxed version of penalties for speculative decoding", its
    eagle_utils says). Sequential decoding would penalise each row by the tokens on its own path
    and lift the stop mask at the row that reaches min_new_tokens, so a request with a penalty
    speculates not at all, and one with min_new_tokens not until it has emitted them: its rounds
    are then exactly plain decoding steps. logit_bias is constant per request: no restriction."""
    if sampling_params is None:
        return False
    if float(getattr(sampling_params, "frequency_penalty", 0.0) or 0.0) != 0.0:
        return True
    if float(getattr(sampling_params, "presence_penalty", 0.0) or 0.0) != 0.0:
        return True
    rep = getattr(sampling_params, "repetition_penalty", 1.0)
    if rep is not None and float(rep) != 1.0:
        return True
    # the stop mask holds at output position t < min_new_tokens; a round starting at position
    # output_len is exact once no row of it can be masked wrongly, i.e. output_len >= min_new_tokens
    return output_len < int(getattr(sampling_params, "min_new_tokens", 0) or 0)


def verify_hook(result, sampling_params, *args, **kwargs):
    """AFTER hook of SamplingParams.verify: reject malformed JETSPEC overrides with ValueError."""
    parse_request_tree(getattr(sampling_params, "custom_params", None))
    return result
