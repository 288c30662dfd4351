"""Composition root: validated config -> long-lived objects -> ASGI app."""

from __future__ import annotations

import os

from .api.gateway import Gateway
from .api.openai_routes import OpenAIRoutes
from .config import Config, load_config
from .identity.static_keys import StaticKeys
from .routing.attempts import AttemptRunner
from .routing.breakers import Breakers
from .routing.catalog import Catalog
from .routing.latency import LatencyStats
from .routing.planner import Planner
from .routing.router import Router

CONFIG_ENV = "MULTIHOME_CONFIG"


def build_app(config: Config) -> Gateway:
    catalog = Catalog(config)
    keys = StaticKeys(config.server.api_keys_env, allow_unauthenticated=config.server.allow_unauthenticated)
    breakers = Breakers(config.routing.breaker)
    latency = LatencyStats(config.routing.latency_ewma_alpha)
    router = Router(catalog, Planner(breakers, latency), AttemptRunner(breakers, latency))
    routes = OpenAIRoutes(catalog, router, config.server.max_body_bytes)
    return Gateway(catalog, keys, routes)


def app_from_env() -> Gateway:
    """Factory for `uvicorn --factory` workers: each worker process builds its own app."""
    return build_app(load_config(os.environ[CONFIG_ENV]))
