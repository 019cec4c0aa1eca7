"""Whether the server shapes draft trees with the head folder's n-gram prior (core/pair_prior.py).

  SGLANG_JETSPEC_PAIR_PRIOR=on   (default) use pair_prior.safetensors when the head folder has one
  SGLANG_JETSPEC_PAIR_PRIOR=off  plain best-first trees on the draft's log-probs

Either way every drafted token is verified by the target, so outputs are the same; the prior only
chooses which candidates become nodes. The file is checked at startup (readable, settings valid,
its vocabulary the target's). Which builder makes the trees (SGLANG_JETSPEC_NATIVE_TREE) is
server_args.check_native_tree's.
"""

from __future__ import annotations

import os

from sglang_jetspec.integration.env_setting import env_choice

ENV = "SGLANG_JETSPEC_PAIR_PRIOR"
MODES = ("on", "off")


def mode_from_env(environ=None) -> str:
    return env_choice(os.environ if environ is None else environ, ENV, MODES)


def check_pair_prior(folder: str, vocab_size: int, environ=None) -> list[str]:
    """Startup problems of the head folder's pair prior (none when it is off or absent)."""
    from sglang_jetspec.core.pair_prior import PairPrior

    try:
        if mode_from_env(environ) == "off":
            return []
        prior = PairPrior.load(folder)
    except ValueError as e:
        return [str(e)]
    return [] if prior is None else prior.check(vocab_size)
