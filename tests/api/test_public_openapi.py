"""The public OpenAPI document (`GET /openapi.json`): a valid OpenAPI 3.1 document, served without
a key, and complete: every (method, path) the gateway dispatches outside /admin/ is in it, and
everything in it is dispatched.

"Dispatched" is measured, not declared: each candidate path is sent with every method to the real
app in process, without a key; anything but 404/405 means a handler took it (it asks for a key,
answers, or reports not ready). Candidates are the document's own paths, the path literals of the
front-door modules, the gateway's live POST tables, and each of those without its /v1 prefix.
"""

from __future__ import annotations

import ast
import inspect
import re

import httpx
import pytest
from openapi_spec_validator import validate

from builders import api_keys, single, typed
from multihome import app as app_module
from multihome.api import gateway as gateway_module
from multihome.api import public_openapi
from multihome.api import routes as routes_module
from multihome.app import build_app

pytestmark = pytest.mark.anyio
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")


@pytest.fixture
def gateway(monkeypatch):
    monkeypatch.setenv("MH_TEST_PUBLIC_DOC_KEY", "mh-public-doc-test-key")
    # With metrics on: GET /metrics is part of the public surface when enabled.
    return build_app(typed(single(server=api_keys("MH_TEST_PUBLIC_DOC_KEY"), metrics={"enabled": True})))


def client(gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw")


def test_the_document_is_valid_openapi_3_1():
    doc = public_openapi.openapi_document()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "x-api-key"}
    paths = doc["paths"]
    assert paths["/v1/chat/completions"]["post"]["security"] == [{"bearer": []}]
    assert {"apiKey": []} in paths["/v1/messages"]["post"]["security"]
    assert paths["/healthz"]["get"]["security"] == []
    errors = paths["/v1/chat/completions"]["post"]["responses"]["4XX"]["content"]["application/json"]["schema"]
    assert errors == {"$ref": "#/components/schemas/Error"}
    anthropic = paths["/v1/messages"]["post"]["responses"]["4XX"]["content"]["application/json"]["schema"]
    assert anthropic == {"$ref": "#/components/schemas/AnthropicError"}


async def test_served_at_openapi_json_without_a_key(gateway):
    async with client(gateway) as http:
        resp = await http.get("/openapi.json")
        again = await http.get("/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.json() == public_openapi.openapi_document()
    assert again.content == resp.content


async def test_every_dispatched_route_is_documented_and_every_documented_route_is_dispatched(gateway):
    doc = public_openapi.openapi_document()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    candidates = {_instance(p) for _, p in documented} | _front_door_literals(gateway)
    candidates |= {p[3:] for p in candidates if p.startswith("/v1/")}
    dispatched = set()
    async with client(gateway) as http:
        for path in sorted(candidates):
            for method in METHODS:
                resp = await http.request(method, path)
                if resp.status_code not in (404, 405):
                    dispatched.add((method, _template(path, documented)))
    undocumented = sorted(dispatched - documented)
    assert not undocumented, f"dispatched but missing from public_openapi.ROUTES: {undocumented}"
    missing = sorted(documented - dispatched)
    assert not missing, f"documented but not dispatched by the gateway: {missing}"


# The admin API has its own document (/admin/v1/openapi.json); the console is HTML pages for people
# (docs/console.md), not an API.
NOT_API = ("/admin/", "/console")


def _front_door_literals(gateway) -> set[str]:
    """Path literals in the dispatch code and the paths of the gateway's live route table (outside NOT_API)."""
    found = {r.path for r in gateway.table.routes}
    for module in (gateway_module, app_module, routes_module):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Constant) and isinstance(node.value, bytes) and node.value.startswith(b"/"):
                found.add(node.value.decode())
    return {_instance(p + "{id}" if p.endswith("/") else p) for p in found if not p.startswith(NOT_API)}


def test_the_route_table_and_the_document_declare_the_same_routes():
    """The document keeps its own list (with summaries and schemas); it must name exactly the routes of
    the gateway's table (api/routes.py) outside the admin API, with the same aliases."""
    table = {(r.method, r.path, r.alias_of) for r in routes_module.ROUTES if not r.path.startswith(NOT_API)}
    assert table == {(r.method, r.path, r.alias_of) for r in public_openapi.ROUTES}


def _instance(template: str) -> str:
    return re.sub(r"\{\w+\}", "probe-id", template)


def _template(path: str, documented: set[tuple[str, str]]) -> str:
    if any(template == path for _, template in documented):  # `/v1/responses/input_tokens` is no response's id
        return path
    for _, template in documented:
        if re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)), path):
            return template
    return path


class _Recording(dict):
    """A parsed query string that notes each name a handler looks up."""

    read: set[str]

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


async def test_every_query_parameter_a_route_reads_is_documented(monkeypatch, tmp_path):
    """Measured: each documented client route is called (with live ids) while the query parser notes every
    name its handler looks up; each must be among the operation's documented query parameters (was: the
    reads' `include`, `stream`, `starting_after`, memory's `agent_id`/`user_id`/`filters`/`tenant` and
    explain's `work` were not, so a schema-driven client or fuzzer never sent them)."""
    from multihome.api.openai import explain
    from multihome.api.responses import common
    from stored_app import StoredWorld, stored_app

    read: set[str] = set()
    real = common.parse_qs

    def recording(*args, **kwargs):
        found = _Recording(real(*args, **kwargs))
        found.read = read
        return found

    monkeypatch.setattr(common, "parse_qs", recording)
    monkeypatch.setattr(explain, "parse_qs", recording)
    monkeypatch.setenv("MH_TEST_QUERY_READS", "mh-query-reads-admin-key")
    doc = public_openapi.openapi_document()
    chat = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
    ns = {"agent_id": "a", "user_id": "u"}
    async with stored_app(f"sqlite+aiosqlite:///{tmp_path}/mh.db", "MH_TEST_QUERY_READS") as (client, app):
        world = StoredWorld(client, "", "mh-query-reads-admin-key", app)
        _, key = await world.tenant("reads")
        ids = {
            "response_id": (await world.call("POST", "/v1/responses", key, json={"model": "g", "input": "hi"})).json()[
                "id"
            ],
            "conversation_id": (await world.call("POST", "/v1/conversations", key, json={})).json()["id"],
            "record_id": (await world.call("POST", "/v1/memory/records", key, json={**ns, "text": "tea"})).json()["id"],
            "user_id": "u",
            "model": "g",
        }
        item = {"type": "message", "role": "user", "content": "x"}
        added = await world.call(
            "POST", f"/v1/conversations/{ids['conversation_id']}/items", key, json={"items": [item]}
        )
        ids["item_id"] = added.json()["data"][0]["id"]
        bodies = {
            "createResponse": {"model": "g", "input": "hi"},
            "createConversation": {},
            "updateConversation": {"metadata": {}},
            "createConversationItems": {"items": [item]},
            "createMemoryRecords": {**ns, "text": "tea"},
            "searchMemory": {**ns, "query": "tea"},
            "updateMemoryNamespace": {**ns, "default_ttl_seconds": 60},
        }
        unread = []
        for path, operations in doc["paths"].items():
            for method, op in operations.items():
                if "bearer" not in str(op["security"]) or path.startswith("/v1/messages") or not path.startswith("/v1"):
                    continue  # the client API's OpenAI door (the Anthropic door reads no query)
                documented = {p["name"] for p in op.get("parameters", ()) if p["in"] == "query"}
                read.clear()
                body = bodies.get(op["operationId"], chat if method == "post" else None)
                url = re.sub(r"\{(\w+)\}", lambda m: ids[m[1]], path)
                await world.call(method.upper(), url, key, json=body, params=ns if "memory" in path else None)
                # `include[]` is how the SDKs write the array `include`; `before` is read by the item and memory
                # lists only to refuse it with a 400 that says to page with `after`.
                refused = {"before"} if op["operationId"] in ("listConversationItems", "listMemoryRecords") else set()
                undocumented = {name.removesuffix("[]") for name in read} - documented - refused
                if undocumented:
                    unread.append(f"{method.upper()} {path} reads {sorted(undocumented)}")
    assert not unread, "query parameters read but not documented:\n" + "\n".join(unread)


def test_the_memory_namespaces_list_declares_its_page_parameters():
    """The list is answered a page at a time (`?limit=` 1-1000, `?after=` a namespace's id): a client generated
    from the document can only page through it if both are declared."""
    op = public_openapi.openapi_document()["paths"]["/v1/memory/namespaces"]["get"]
    query = {p["name"]: p["schema"] for p in op["parameters"] if p["in"] == "query"}
    assert query["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000} and query["after"]["type"] == "string"
