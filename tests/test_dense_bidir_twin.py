"""The SmolLM2 head's bidirectional twin, models/smollm2-135m-jetspec-bidir (the baseline of
`launch.bench --methods bidirectional` on the dense default).

Fast: it loads strictly in the published layout, is marked bidirectional, fits SmolLM2, equals
the shipped causal head's config in every other field, is never picked as the default head, and
drafts usefully and losslessly on a held-out prompt through the reference decoder.
"""

from head_checks import assert_bidirectional_twin, assert_drafts_losslessly
from sglang_jetspec.model_store import shipped_head_dir


def test_twin_is_the_causal_heads_config_but_for_the_mask(smollm2_dir):
    causal = shipped_head_dir("smollm2")
    assert_bidirectional_twin(causal.parent / "smollm2-135m-jetspec-bidir", causal, smollm2_dir)


def test_twin_drafts_losslessly_on_a_heldout_prompt(smollm2_target):
    twin = shipped_head_dir("smollm2").parent / "smollm2-135m-jetspec-bidir"
    assert_drafts_losslessly(smollm2_target, twin, causal=False, max_new_tokens=24)
