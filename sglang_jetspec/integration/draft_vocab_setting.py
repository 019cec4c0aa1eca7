"""Whether the server drafts over the head folder's draft vocabulary (core/draft_vocab.py).

  SGLANG_JETSPEC_DRAFT_VOCAB=on   (default) use draft_vocab.safetensors when the head folder has one
  SGLANG_JETSPEC_DRAFT_VOCAB=off  score the target's whole vocabulary (the published heads' way)

Either way every drafted token is verified by the target, so outputs are the same; the subset
only makes the draft cheaper. The file is checked at startup (readable, ids inside the target's
vocabulary, at least as many tokens as the tree width).
"""

from __future__ import annotations

import os

from sglang_jetspec.integration.env_setting import env_choice

ENV = "SGLANG_JETSPEC_DRAFT_VOCAB"
MODES = ("on", "off")


def mode_from_env(environ=None) -> str:
    return env_choice(os.environ if environ is None else environ, ENV, MODES)


def check_draft_vocab(folder: str, vocab_size: int, width: int, environ=None) -> list[str]:
    """Startup problems of the head folder's draft vocabulary (none when it is off or absent)."""
    from sglang_jetspec.core.draft_vocab import DraftVocab

    try:
        if mode_from_env(environ) == "off":
            return []
        vocab = DraftVocab.load(folder)
    except ValueError as e:
        return [str(e)]
    return [] if vocab is None else vocab.check(vocab_size, width)
