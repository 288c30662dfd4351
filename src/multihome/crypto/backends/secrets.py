"""Secrets a backend's config names by environment variable (`*_env`), read once at start-up."""

from __future__ import annotations

from ...config.env import env_secret


def required_env(var: str, *, what: str) -> str:
    """The variable's value; ConfigError (naming `what`) when it is not set."""
    value = env_secret(var, what=what)
    assert value is not None  # env_secret returns None only when no variable is named
    return value
