"""JETSPEC settings read from the environment (SGLANG_JETSPEC_*): a name, fixed choices, the first
one the default. One reader, so every setting trims, ignores case and names a typo the same way
(the launcher calls it at startup, so a typo stops the server there, not in the scheduler)."""

from __future__ import annotations


def env_choice(environ, name: str, choices: tuple[str, ...]) -> str:
    """environ[name] (default choices[0]), lower-cased; ValueError naming the value and the choices."""
    value = environ.get(name, choices[0]).strip().lower()
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {list(choices)}")
    return value
