"""SGLang plugin entry point (group ``sglang.srt.plugins``, declared in pyproject.toml).

SGLang calls :func:`register` in every process it starts; the work lives in
``sglang_jetspec.integration.plugin`` (the only package that imports sglang), imported here
lazily so that importing ``sglang_jetspec`` never pulls in SGLang.
"""


def register() -> None:
    """Called by SGLang's plugin loader; idempotent. Registers the JETSPEC algorithm."""
    from sglang_jetspec.integration.plugin import register as _register

    _register()
