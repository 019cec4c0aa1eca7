"""SGLang plugin entry point (group ``sglang.srt.plugins``).

SGLang calls :func:`register` in every process it starts. The JETSPEC algorithm is not
registered yet: the SGLang worker lands with the integration work. Keeping the entry point
declared from the start means installs never need re-doing when it does.
"""


def register() -> None:
    """Called by SGLang's plugin loader; idempotent. Registers nothing yet."""
    return None
