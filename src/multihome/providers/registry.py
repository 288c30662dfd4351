"""Every provider kind the gateway speaks, in one list, and the adapter factory that reads it.

Config validation and telemetry read `KINDS` instead of keeping their own per-kind lists; the
simulators (which use none of the gateway) and the conformance matrix keep a table each, and
tests fail when either disagrees with this one. Importing this module loads only the descriptors
(plain data: see kind.py); an adapter's module is imported when a config first uses its kind.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from . import anthropic, azure, bedrock, gemini, openai
from .kind import ProviderKind

if TYPE_CHECKING:  # config imports this registry: importing config back at run time would be a cycle
    from ..config import Provider
    from .base import Adapter

__all__ = ["BY_NAME", "KINDS", "NAMES", "ProviderKind", "build_adapter"]

KINDS: tuple[ProviderKind, ...] = (
    openai.KIND,
    azure.KIND,
    bedrock.KIND,
    anthropic.KIND,
    gemini.KIND,
    gemini.VERTEX,
    anthropic.FOUNDRY,
    azure.INFERENCE,
    anthropic.VERTEX,
    anthropic.BEDROCK,
    bedrock.OPENAI,
)
BY_NAME: dict[str, ProviderKind] = {kind.name: kind for kind in KINDS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def build_adapter(name: str, provider: Provider, stored_key: str | None = None) -> Adapter:
    """The adapter of provider `name`; `stored_key`: its API key from the admin API's sealed store
    (only for a provider with `auth.api_key_from: store`, whose kind takes an API key)."""
    module = importlib.import_module(BY_NAME[provider.kind].adapter)
    if provider.auth.api_key_from == "store":
        return cast("Adapter", module.build(name, provider, stored_key))
    return cast("Adapter", module.build(name, provider))
