"""Environment variables a config names: listing them (config check) and reading secrets from them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import msgspec

from .errors import ConfigError


def named_env_vars(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """(key path, variable) for every environment variable the config names (`*_env` fields)."""
    if isinstance(value, msgspec.Struct):
        for field in value.__struct_fields__:
            item = getattr(value, field)
            where = f"{path}.{field}".lstrip(".")
            if field.endswith("_env") and isinstance(item, str):
                yield where, item
            elif field.endswith("_env") and isinstance(item, list):
                yield from ((f"{where}[{i}]", var) for i, var in enumerate(item) if isinstance(var, str))
            else:
                yield from named_env_vars(item, where)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from named_env_vars(item, f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from named_env_vars(item, f"{path}[{i}]")


def env_secret(var: str | None, *, what: str) -> str | None:
    """Read a secret from the environment; a named but unset variable is a start-up error."""
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"{what}: environment variable {var} is not set")
    return value
