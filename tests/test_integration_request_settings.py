"""Per-request tree settings (custom_params["jetspec"]): parsing, capping, and the 400 path."""

import pytest

from sglang_jetspec.integration.request_settings import parse_request_tree, resolve_tree
from sglang_jetspec.integration.server_args import TreeSettings

SERVER = TreeSettings(budget=32, width=7, depth=15)


def test_no_overrides_means_the_server_settings():
    assert parse_request_tree(None) == {}
    assert parse_request_tree({"other": 1}) == {}
    assert resolve_tree(None, SERVER) == SERVER


def test_overrides_are_upper_bounds_for_budget_and_depth():
    assert resolve_tree({"jetspec": {"budget": 8}}, SERVER) == TreeSettings(8, 7, 15)
    assert resolve_tree({"jetspec": {"budget": 100, "depth": 40}}, SERVER) == SERVER
    assert resolve_tree({"jetspec": {"width": 2, "depth": 3, "budget": 1}}, SERVER) == TreeSettings(1, 2, 3)
    assert resolve_tree({"jetspec": {"width": 12}}, SERVER).width == 12


@pytest.mark.parametrize("value, message", [
    (5, "must be an object"),
    ({"budgte": 4}, r"unknown keys \['budgte'\]"),
    ({"budget": 0}, "budget 0 must be in"),
    ({"width": -3}, "width -3 must be in"),
    ({"depth": 2.5}, "depth must be an integer, got 2.5"),
    ({"budget": True}, "budget must be an integer, got True"),
    ({"budget": "8"}, "budget must be an integer, got '8'"),
])
def test_bad_overrides_name_the_value(value, message):
    with pytest.raises(ValueError, match=message):
        parse_request_tree({"jetspec": value})


def test_sglangs_sampling_params_verify_rejects_bad_overrides(monkeypatch):
    """After the plugin's hooks are applied, SGLang's own validation (whose ValueError the
    HTTP server turns into a 400) names a bad override; good and absent ones pass."""
    from sglang.srt.plugins.hook_registry import HookRegistry
    from sglang.srt.sampling.sampling_params import SamplingParams

    from sglang_jetspec.integration.hooks import VERIFY_TARGET, register_hooks

    monkeypatch.setattr(SamplingParams, "verify", SamplingParams.verify)  # restored afterwards
    monkeypatch.setattr(HookRegistry, "_hooks", type(HookRegistry._hooks)(list, HookRegistry._hooks))
    monkeypatch.setattr(HookRegistry, "_patched", set(HookRegistry._patched) - {VERIFY_TARGET})
    import sglang_jetspec.integration.hooks as hooks_module

    monkeypatch.setattr(hooks_module, "_registered", False)  # register into this test's registry
    register_hooks()
    HookRegistry.apply_hooks()
    SamplingParams(max_new_tokens=4).verify(100)
    SamplingParams(max_new_tokens=4, custom_params={"jetspec": {"budget": 4}}).verify(100)
    with pytest.raises(ValueError, match="custom_params.jetspec.budget 0 must be in"):
        SamplingParams(max_new_tokens=4, custom_params={"jetspec": {"budget": 0}}).verify(100)
    with pytest.raises(ValueError, match="top_p"):  # SGLang's own checks still run first
        SamplingParams(max_new_tokens=4, top_p=2.0, custom_params={"jetspec": {"budget": 0}}).verify(100)


def test_trees_never_reach_past_the_tokens_a_request_may_still_emit():
    from sglang_jetspec.integration.request_settings import cap_to_remaining

    assert cap_to_remaining(SERVER, None) == SERVER
    assert cap_to_remaining(SERVER, 100) == SERVER
    assert cap_to_remaining(SERVER, 5) == TreeSettings(32, 7, 4)  # 4 drafts + 1 bonus = 5 tokens
    assert cap_to_remaining(SERVER, 2) == TreeSettings(32, 7, 1)
    assert cap_to_remaining(SERVER, 1).budget == 1  # only the bonus token is left: no drafts
    assert cap_to_remaining(SERVER, 0).budget == 1


def test_penalised_requests_take_plain_steps():
    """Penalties make a verify round inexact in SGLang (applied from the round's start state), so
    such a request decodes one token a round; min_new_tokens only until it has emitted them."""
    from sglang.srt.sampling.sampling_params import SamplingParams

    from sglang_jetspec.integration.request_settings import needs_plain_step

    def sp(**kw):
        return SamplingParams(max_new_tokens=64, **kw)

    assert not needs_plain_step(sp(), 0) and not needs_plain_step(None, 0)
    assert not needs_plain_step(sp(temperature=0.7, top_p=0.9, logit_bias={"5": 1.0}), 3)  # constant per request
    for kw in ({"frequency_penalty": 0.5}, {"presence_penalty": -0.2}, {"repetition_penalty": 1.1}):
        assert needs_plain_step(sp(**kw), 0) and needs_plain_step(sp(**kw), 1000), kw
    # min_new_tokens: plain until the request has emitted them (the mask lifts mid-round otherwise)
    assert [needs_plain_step(sp(min_new_tokens=3), k) for k in range(6)] == [True] * 3 + [False] * 3
