"""Provider kind -> adapter factory. Modules are imported only for kinds a config uses."""

from __future__ import annotations

import importlib

from ..config import Provider
from .base import Adapter

# Each module exposes `build(name: str, provider: Provider) -> Adapter`.
FACTORIES = {
    "openai": "multihome.providers.openai",
    "azure": "multihome.providers.azure",
    "bedrock": "multihome.providers.bedrock",
    "anthropic": "multihome.providers.anthropic",
    "gemini": "multihome.providers.gemini",
    "vertex": "multihome.providers.gemini",
}


def build_adapter(name: str, provider: Provider) -> Adapter:
    module = importlib.import_module(FACTORIES[provider.kind])
    return module.build(name, provider)
