"""The admin OpenAPI document lists every route of every admin route table (so schemathesis, which
is driven by the document, reaches all of them), and nothing that no table serves."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from multihome.api import admin_audit_routes, admin_openapi
from multihome.api.admin_budget_routes import ROUTES as BUDGET_ROUTES
from multihome.api.admin_contracts_routes import ROUTES as CONTRACT_ROUTES
from multihome.api.admin_metering_routes import ROUTES as METERING_ROUTES
from multihome.api.admin_revocation_routes import ROUTES as REVOCATION_ROUTES
from multihome.api.admin_routes import ROUTES as ADMIN_ROUTES


def _template(pattern: re.Pattern) -> str:
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern[1:-1]).replace("\\.", ".")


def served() -> set[tuple[str, str]]:
    routes = {(r.method, _template(r.pattern)) for r in (*ADMIN_ROUTES, *BUDGET_ROUTES, *REVOCATION_ROUTES)}
    routes |= {("GET", _template(pattern)) for pattern, *_ in METERING_ROUTES}
    routes |= {(method, _template(pattern)) for method, pattern, *_ in CONTRACT_ROUTES}
    routes.add(("GET", admin_audit_routes.PREFIX + "events"))
    return routes


def test_every_admin_route_is_in_the_admin_document_and_nothing_else():
    doc = admin_openapi.openapi_document()
    validate(doc)
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert sorted(served() - documented) == [], "served but not documented"
    assert sorted(documented - served()) == [], "documented but not served"
