"""The admin OpenAPI document the gateway serves lists every route its admin dispatcher serves (so
schemathesis, which is driven by the document, reaches all of them), and nothing that it does not
serve; it validates as OpenAPI 3.1."""

from __future__ import annotations

import httpx
import pytest
from openapi_spec_validator import validate

from builders import open_door, single, typed
from multihome.api.admin import registry
from multihome.app import build_app

pytestmark = pytest.mark.anyio


async def test_every_served_admin_route_is_in_the_served_document_and_nothing_else():
    app = build_app(typed(single(server=open_door())))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as anon:
        doc = (await anon.get("/admin/v1/openapi.json")).json()
    validate(doc)
    served = {(r.method, r.path) for r in app.admin.routes}
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert sorted(served - documented) == [], "served but not documented"
    assert sorted(documented - served) == [], "documented but not served"


async def test_each_route_is_dispatched_to_its_own_handler():
    """A route's path matches itself (filled in) and no other route with its method first."""
    for route in registry.ROUTES:
        path = route.path.format(**{name: f"x_{name}" for name in route.params})
        first = next(r for r in registry.ROUTES if r.method == route.method and r.pattern.match(path))
        assert first is route, f"{route.method} {route.path} is served by {first.name}"


def test_operation_names_and_change_events_are_unique():
    assert len(registry.BY_NAME) == len(registry.ROUTES)
    events = [r.event for r in registry.ROUTES if r.event]
    assert len(events) == len(set(events))
    assert all(r.event for r in registry.ROUTES if r.method in ("PATCH", "DELETE"))


async def test_paged_lists_and_usage_summaries_publish_their_page_parameters():
    """A client generated from the document can ask for the next page: the lists an admin grows take limit and
    after, the usage summaries (one entry per key) limit and page."""
    app = build_app(typed(single(server=open_door())))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as anon:
        doc = (await anon.get("/admin/v1/openapi.json")).json()
    query = {
        op["operationId"]: {p["name"] for p in op.get("parameters", ()) if p["in"] == "query"}
        for ops in doc["paths"].values()
        for op in ops.values()
    }
    lists = ("list_keys", "list_teams", "list_policies", "list_entitlements", "list_stateful_pins")
    assert all({"limit", "after"} <= query[name] for name in lists), {name: query[name] for name in lists}
    assert {"limit", "page"} <= query["tenant_usage"] and {"limit", "page"} <= query["org_usage"]
