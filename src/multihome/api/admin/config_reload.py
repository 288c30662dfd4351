"""Admin resource: `POST /admin/v1/config/reload` reads the gateway's YAML config file again and applies
what can change live (providers, deployments, model groups, budgets and rate limits), as SIGHUP does.

Org-admin only: the file is the whole gateway's. A file that does not load, or that changes a section
read at start-up only, is refused with 400 and its problems; the running config keeps serving. A
success is audited (`config.reload`, the file's digest as the object id). With `serve --workers`, the
worker that answers applies it, then every other worker does within a second (docs/serving.md).
"""

from __future__ import annotations

from typing import Any

from ...config import ConfigError
from ...schema.errors import ApiError
from .rbac import ORG
from .route import PREFIX, AdminCall, Route, Services


async def reload_config(s: Services, c: AdminCall) -> Any:
    if s.reload is None:
        raise ApiError(
            501,
            "This gateway was not started from a config file (multihome serve --config): there is nothing to reload.",
            code="not_configured",
        )
    try:
        return await s.reload()
    except ConfigError as exc:
        raise ApiError(
            400,
            "The config file was refused; the running config keeps serving. Problems: " + "; ".join(exc.problems),
            code="invalid_config",
        ) from None


ROUTES = [
    Route(
        "POST",
        PREFIX + "/config/reload",
        ORG,
        reload_config,
        "Read the config file again and apply it (as SIGHUP does)",
        status=200,
        event="config.reload",
        refresh=False,
    ),
]
