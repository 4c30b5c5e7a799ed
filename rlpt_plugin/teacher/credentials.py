"""The one way the plugin reads a teacher's API key: from the environment variable a setting
names, never from a config file or a command line (where it would end up in logs and manifests)."""

from __future__ import annotations

import os


class MissingKeyError(ValueError):
    """The variable that should hold the key is not a name, not set, or empty."""


def key_from_env(name: str | None, setting: str) -> str | None:
    """``$name``, or None when ``name`` is empty (no key). ``setting`` is how the user set ``name``
    (``--api-key-env``, ``rlpt.judge.api_key_env``); the error names it and the variable."""
    if not name:
        return None
    if "=" in name or name.strip() != name:
        raise MissingKeyError(f"`{setting}` must be the NAME of an environment variable, but is {name!r}")
    value = os.environ.get(name)
    if value is None:
        raise MissingKeyError(f"`{setting}` names the environment variable {name}, which is not set in this process")
    if not value.strip():
        raise MissingKeyError(f"`{setting}` names the environment variable {name}, which is empty")
    return value.strip()
