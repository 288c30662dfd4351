"""The admin API's OpenAPI 3.1 document, generated from the route registry and the body types: every
route the dispatcher serves is in it (tests/api/test_admin_openapi_complete.py)."""

from __future__ import annotations

import typing
from typing import Any

import msgspec

from .rbac import who_may
from .registry import ROUTES
from .route import CSV_MEDIA, Route

_ERROR = {
    "description": "OpenAI-style error envelope",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_REF = "#/components/schemas/{name}"


def openapi_document() -> dict[str, Any]:
    types = sorted({t for r in ROUTES for t in (r.body, r.response) if t is not None}, key=_type_name)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(types, schemas, strict=True))
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
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schema_of)
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


def _operation(route: Route, schema_of: dict[Any, Any]) -> dict[str, Any]:
    if route.media == CSV_MEDIA:
        content = {CSV_MEDIA: {"schema": {"type": "string"}}}
    else:
        schema = schema_of[route.response] if route.response is not None else {"type": "object"}
        content = {"application/json": {"schema": schema}}
    op: dict[str, Any] = {
        "summary": route.summary,
        "description": f"Who may call it: {who_may(route.role)}."
        + (f" A success is recorded as the admin change `{route.event}`." if route.event else ""),
        "operationId": route.name,
        "responses": {str(route.status): {"description": "OK", "content": content}, "4XX": _ERROR},
    }
    parameters = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in route.params]
    parameters += [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in route.query]
    if parameters:
        op["parameters"] = parameters
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema_of[route.body]}}}
    return op


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", None) or " | ".join(a.__name__ for a in typing.get_args(t))
