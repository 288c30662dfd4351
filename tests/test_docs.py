"""docs/api.md is the one API reference: every endpoint the gateway serves is listed there.

The endpoints are read from the code, not from a list kept by hand: the admin route registry
(`api/admin/registry.py`), the admin OpenAPI document the gateway serves, the gateway's route table
(`api/routes.py`, with the OpenAI-style aliases) and the path literals beside it (`api/gateway.py`,
`app.py`), and the public OpenAPI route list when there is one. A route added to any of them without a line in
docs/api.md fails here, and so does a documented admin route that no longer exists.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

from multihome import app as app_module
from multihome.api import gateway as gateway_module
from multihome.api import routes as routes_module
from multihome.api.admin import registry
from multihome.api.admin.events import EVENTS
from multihome.api.admin.openapi import openapi_document

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
# "`GET /admin/v1/tenants/{tenant}`": a method and a path in one code span.
_DOCUMENTED = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s?]*)")


def documented() -> set[tuple[str, str]]:
    return set(_DOCUMENTED.findall(API_DOC.read_text()))


def admin_routes() -> set[tuple[str, str]]:
    found = {(r.method, r.path) for r in registry.ROUTES}
    for path, operations in openapi_document()["paths"].items():
        found.update((method.upper(), path) for method in operations)
    return found


def _path_literals(module) -> set[str]:
    """Every bytes or str constant in a module's source that is a URL path (`b"/v1/embeddings"`)."""
    tree = ast.parse(Path(module.__file__).read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (bytes, str)):
            value = node.value.decode() if isinstance(node.value, bytes) else node.value
            if re.fullmatch(r"/[A-Za-z0-9_./{}-]*", value) and len(value) > 1:
                out.add(value)
    return out


def public_paths() -> set[str]:
    paths = _path_literals(gateway_module) | _path_literals(app_module) | _path_literals(routes_module)
    paths |= {r.path for r in routes_module.ROUTES}  # the route table (api/routes.py)
    return {p for p in paths if not p.startswith("/admin/v1/") or p == "/admin/v1/openapi.json"}


def public_openapi_routes() -> set[tuple[str, str]]:
    """The public OpenAPI route list (api/public_openapi.py), where the gateway has one."""
    if importlib.util.find_spec("multihome.api.public_openapi") is None:
        return set()
    module = importlib.import_module("multihome.api.public_openapi")
    return {(r.method, r.path) for r in module.ROUTES}


def test_every_admin_route_is_documented():
    missing = sorted(admin_routes() - documented())
    assert not missing, "docs/api.md lacks these admin routes: " + ", ".join(f"{m} {p}" for m, p in missing)


def test_every_documented_admin_route_exists():
    known = admin_routes() | {("GET", "/admin/v1/openapi.json")}
    stale = sorted((m, p) for m, p in documented() if p.startswith("/admin/v1") and (m, p) not in known)
    assert not stale, "docs/api.md lists admin routes the gateway does not serve: " + ", ".join(
        f"{m} {p}" for m, p in stale
    )


def test_every_public_endpoint_is_documented():
    paths = {p for _, p in documented()}
    # A literal ending in "/" is a prefix the gateway matches (`/v1/models/` + an id).
    missing = sorted(
        p for p in public_paths() if not (p in paths or (p.endswith("/") and any(d.startswith(p) for d in paths)))
    )
    assert not missing, "docs/api.md lacks these endpoints: " + ", ".join(missing)
    missing_routes = sorted(public_openapi_routes() - documented())
    assert not missing_routes, "docs/api.md lacks: " + ", ".join(f"{m} {p}" for m, p in missing_routes)


def test_every_multihome_header_is_explained():
    """Each `x-multihome-*` header the gateway reads or sends has a line in the reference."""
    doc = API_DOC.read_text()
    names = set()
    for path in (ROOT / "src" / "multihome").rglob("*.py"):
        if "simulators" not in path.parts:
            names |= set(re.findall(r"x-multihome-[a-z]+(?:-[a-z]+)*", path.read_text()))
    names.discard("x-multihome-")  # a prefix in prose
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, "docs/api.md does not explain: " + ", ".join(missing)


def test_the_table_readers_see_every_table():
    """Guards the test itself: the route registry is found and read (a refactor that hides it fails here)."""
    admin = admin_routes()
    assert ("GET", "/admin/v1/whoami") in admin and ("POST", "/admin/v1/tenants/{tenant}/budgets") in admin
    assert ("GET", "/admin/v1/tenants/{tenant}/usage") in admin and ("GET", "/admin/v1/contracts/report.csv") in admin
    assert ("DELETE", "/admin/v1/token-revocations/{id}") in admin and ("GET", "/admin/v1/audit/events") in admin
    assert {"/v1/chat/completions", "/chat/completions", "/v1/messages", "/healthz", "/readyz"} <= public_paths()


def test_the_readme_links_the_reference():
    assert "docs/api.md" in (ROOT / "README.md").read_text()


def test_every_admin_change_event_is_listed_in_the_audit_doc():
    """docs/audit.md names each `admin_change` action the admin routes write, and the console's logout (written
    outside the admin routes), and no other."""
    from multihome.api.console.ends import LOGOUT

    section = (ROOT / "docs" / "audit.md").read_text().split("- **admin_change**", 1)[1].split("\n- **", 1)[0]
    listed = set(re.findall(r"`([a-z_]+\.[a-z]+)`", section))
    assert listed == set(EVENTS.values()) | {LOGOUT}


def test_every_error_code_the_gateway_gives_is_in_the_reference():
    """README: "every error code: docs/api.md". Each `code="..."` the gateway's code raises (the simulators
    are not the gateway) is named in docs/api.md, in its Errors table or beside the route that gives it."""
    doc = API_DOC.read_text()
    codes: dict[str, str] = {}
    for path in (ROOT / "src" / "multihome").rglob("*.py"):
        if "simulators" not in path.parts:
            for code in re.findall(r'\bcode="([a-z][a-z0-9_]*)"', path.read_text()):
                codes.setdefault(code, str(path.relative_to(ROOT)))
    assert {"model_not_found", "invalid_http_request", "request_timeout"} <= set(codes)  # the scan finds them
    missing = sorted(f"{code} ({where})" for code, where in codes.items() if f"`{code}`" not in doc)
    assert not missing, "docs/api.md does not name these error codes: " + ", ".join(missing)
