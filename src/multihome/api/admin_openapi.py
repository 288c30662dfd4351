"""The admin API's OpenAPI 3.1 document, generated from the route table and the body structs."""

from __future__ import annotations

import msgspec

from ..config.contracts import Commitment, RevenueShare
from .admin_bodies import KeyView
from .admin_budget_routes import ROUTES as BUDGET_ROUTES
from .admin_contracts_routes import ROUTES as CONTRACT_ROUTES
from .admin_metering_routes import ROUTES as METERING_ROUTES
from .admin_revocation_routes import ROUTES as REVOCATION_ROUTES
from .admin_routes import ROUTES as ADMIN_ROUTES

ROUTES = [*ADMIN_ROUTES, *BUDGET_ROUTES, *REVOCATION_ROUTES]

# GET-only routes served by other modules: (path, summary, query parameters).
_EXTRA_GETS = [
    *((pattern.pattern[1:-1], summary, ["group_by", "start", "end"]) for pattern, _, _, summary in METERING_ROUTES),
    ("/admin/v1/audit/events", "The audit trail: filter by tenant, kind, model group, deployment, outcome, subject, time; "
     "cursor pagination (org-admin: all tenants; auditor and tenant-admin: their own)",
     ["tenant", "since", "until", "kind", "model_group", "deployment", "outcome", "subject", "limit", "after"]),
]

_ERROR = {
    "description": "OpenAI-style error envelope",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def openapi_document() -> dict:
    bodies = sorted({r.body for r in ROUTES if r.body is not None}, key=lambda t: t.__name__)
    _, components = msgspec.json.schema_components([*bodies, KeyView, RevenueShare, Commitment],
                                                   ref_template="#/components/schemas/{name}")
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {k: {"type": ["string", "null"]} for k in ("message", "type", "param", "code")},
            }
        },
    }
    paths: dict[str, dict] = {}
    for route in ROUTES:
        path = route.pattern.pattern[1:-1]
        path = _template(path)
        op: dict = {
            "summary": route.summary,
            "operationId": route.handler,
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                          "4XX": _ERROR},
        }
        params = [name for name in route.pattern.groupindex]
        parameters = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in params]
        parameters += [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in route.query]
        if parameters:
            op["parameters"] = parameters
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}},
            }
        paths.setdefault(path, {})[route.method.lower()] = op
    for regex_path, summary, query in _EXTRA_GETS:
        path = _template(regex_path)
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in _path_names(path)]
        params += [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in query]
        paths.setdefault(path, {})["get"] = {
            "summary": summary, "operationId": path.strip("/").replace("/", "_").replace("{", "").replace("}", ""),
            "parameters": params,
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                          "4XX": _ERROR},
        }
    for method, pattern, handler, summary in CONTRACT_ROUTES:
        path = _template(pattern.pattern[1:-1]).replace("\\.", ".")
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in _path_names(path)]
        if handler in ("report", "report_csv", "all_csv"):
            params.append({"name": "at", "in": "query", "required": False, "schema": {"type": "string"}})
        ok = {"text/csv": {"schema": {"type": "string"}}} if path.endswith(".csv") else {
            "application/json": {"schema": {"type": "object"}}}
        op = {"summary": summary, "operationId": f"contracts_{handler}", "parameters": params,
              "responses": {"200" if method == "GET" else "201": {"description": "OK", "content": ok}, "4XX": _ERROR}}
        if handler == "create":
            body = {"oneOf": [{"$ref": "#/components/schemas/RevenueShare"}, {"$ref": "#/components/schemas/Commitment"}]}
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Multihome admin API", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _path_names(path: str) -> list[str]:
    import re

    return re.findall(r"\{(\w+)\}", path)


def _template(regex_path: str) -> str:
    import re

    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", regex_path)
