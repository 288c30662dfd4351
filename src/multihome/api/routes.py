"""The gateway's route table: every route it serves declared once, as data (method, path, handler).

Dispatch, the 405 answer and its `Allow` header, the 404 answer that lists what is served, the
API family whose envelope an error is written in (even on a path that matched nothing), and the
checks in tests (docs/api.md, the public OpenAPI document) are all derived from `ROUTES`.

A path ending in `{name}` whose prefix no other route's template shares matches every path under
that prefix (the handler reads the rest: model names with slashes, the admin API); every other
`{name}` matches exactly one path segment (`/v1/responses/{response_id}/input_items`). Method `*`
takes every method (the admin API, which routes inside itself: api/admin/dispatch.py). A served path
is never also a one-segment template's id: `/v1/responses/input_tokens` is not a response's. `UNSERVED`
names the published OpenAI operations the gateway does not serve, each answered saying why.
A handler is named, not imported: the gateway binds the names to the objects the composition
root built (`app.py`), so the table is readable without building an app.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from ..policy import ENDPOINT_NOT_IN_KEY_SCOPE
from ..schema.errors import ApiError, echo_path
from ..schema.principal import Principal
from .anthropic.errors import ANTHROPIC
from .asgi import Receive, Send
from .openai.errors import OPENAI
from .pipeline import Call
from .read_only import may_write
from .render import Family

Handler = Callable[[Call, Receive, Send], Awaitable[None]]
ANY = "*"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: str  # a name the gateway binds (Gateway's `doors`, or its own routes)
    family: Family = OPENAI  # how callers send their key, and the envelope errors are written in
    identify: bool = True  # the call needs a key or token (the gateway identifies it before the handler)
    alias_of: str | None = None  # the same handler under another path
    quiet: bool = False  # left out of the access log (health probes, polled every few seconds)
    # The endpoint scope an API key narrowed by `scopes_endpoints` must hold to call a route that is not
    # a model call (schema/principal.py ENDPOINT_SCOPES; checked once the caller is known,
    # before the handler runs: `_scoped`).
    # A model call's own endpoint is checked by policy with the rest of its decision.
    scope: str | None = None
    writes: bool = False  # the route changes stored state: refused to a read-only caller (`may_write`)


def in_scope(principal: Principal, scope: str) -> None:
    """Refuse (403, as policy refuses a model call) a caller whose key's endpoint scope leaves out `scope`."""
    allowed = principal.scopes_endpoints
    if allowed is None or scope in allowed:
        return
    who = f"This API key ({principal.key_id})" if principal.key_id else "This credential"
    raise ApiError(
        403,
        f"{who} may call only the [{', '.join(sorted(allowed))}] endpoints, not '{scope}'. "
        f"Ask a tenant admin for a key whose scope includes '{scope}'.",
        type="permission_error",
        code=ENDPOINT_NOT_IN_KEY_SCOPE,
    )


def _scoped(handler: Handler, route: Route) -> Handler:
    """`handler` behind the endpoint scope check of the route's `scope` (and, for a route that `writes`, the
    read-only caller's refusal), made once when the table is built: the routes without a scope (every model
    call) pay nothing for it per call."""
    scope, what = route.scope, f"{route.method} {route.path}"
    assert scope is not None

    async def checked(call: Call, receive: Receive, send: Send) -> None:
        if call.principal is not None:  # identified by the gateway before any handler runs
            in_scope(call.principal, scope)
            if route.writes:
                may_write(call.principal, what)
        await handler(call, receive, send)

    return checked


ADMIN_PREFIX = "/admin/v1/"

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/chat/completions", "chat"),
    Route("POST", "/v1/embeddings", "embeddings"),
    Route("GET", "/v1/models", "models"),
    Route("GET", "/v1/models/{model}", "model"),
    Route("POST", "/v1/messages", "messages", ANTHROPIC),
    Route("POST", "/v1/messages/count_tokens", "count_tokens", ANTHROPIC, scope="messages"),
    Route("POST", "/v1/route/explain", "explain"),
    Route("POST", "/v1/responses", "responses_create"),
    Route("POST", "/v1/responses/input_tokens", "responses_input_tokens", scope="responses"),
    Route("GET", "/v1/responses/{response_id}", "responses_retrieve", scope="responses"),
    Route("DELETE", "/v1/responses/{response_id}", "responses_delete", scope="responses", writes=True),
    Route("POST", "/v1/responses/{response_id}/cancel", "responses_cancel", scope="responses", writes=True),
    Route("GET", "/v1/responses/{response_id}/input_items", "responses_input_items", scope="responses"),
    Route("POST", "/v1/conversations", "conversations_create", scope="responses", writes=True),
    Route("GET", "/v1/conversations/{conversation_id}", "conversations_retrieve", scope="responses"),
    Route("POST", "/v1/conversations/{conversation_id}", "conversations_update", scope="responses", writes=True),
    Route("DELETE", "/v1/conversations/{conversation_id}", "conversations_delete", scope="responses", writes=True),
    Route("GET", "/v1/conversations/{conversation_id}/items", "conversation_items_list", scope="responses"),
    Route(
        "POST", "/v1/conversations/{conversation_id}/items", "conversation_items_create", scope="responses", writes=True
    ),
    Route(
        "GET", "/v1/conversations/{conversation_id}/items/{item_id}", "conversation_item_retrieve", scope="responses"
    ),
    Route(
        "DELETE",
        "/v1/conversations/{conversation_id}/items/{item_id}",
        "conversation_item_delete",
        scope="responses",
        writes=True,
    ),
    Route("POST", "/v1/memory/records", "memory_records_create", scope="memory", writes=True),
    Route("GET", "/v1/memory/records", "memory_records_list", scope="memory"),
    Route("GET", "/v1/memory/records/{record_id}", "memory_record_retrieve", scope="memory"),
    Route("DELETE", "/v1/memory/records/{record_id}", "memory_record_delete", scope="memory", writes=True),
    Route("POST", "/v1/memory/search", "memory_search", scope="memory"),
    Route("GET", "/v1/memory/namespaces", "memory_namespaces_list", scope="memory"),
    Route("POST", "/v1/memory/namespaces", "memory_namespace_update", scope="memory", writes=True),
    Route("DELETE", "/v1/memory/namespaces", "memory_namespace_delete", scope="memory", writes=True),
    Route("DELETE", "/v1/memory/users/{user_id}", "memory_user_forget", scope="memory", writes=True),
    Route("GET", "/healthz", "health", identify=False, quiet=True),
    Route("GET", "/readyz", "ready", identify=False, quiet=True),
    Route("GET", "/openapi.json", "openapi", identify=False),
    # Present when metrics.enabled; it checks metrics.access itself (api/metrics_endpoint.py).
    Route("GET", "/metrics", "metrics", identify=False, quiet=True),
    Route("GET", ADMIN_PREFIX + "openapi.json", "admin_openapi", identify=False),
    # The admin API identifies its caller itself: a refused tenant's admins may still mend its rows
    # (Authenticator.admin, api/admin/refusals.py).
    Route(ANY, ADMIN_PREFIX + "{path}", "admin", identify=False),
    # The operator's console (api/console/): HTML pages; it identifies the session's key itself.
    Route("GET", "/console", "console", identify=False),
    Route(ANY, "/console/{path}", "console", identify=False),
    # OpenAI's SDKs accept a base URL without /v1; so does the gateway, as OpenAI does.
    Route("POST", "/chat/completions", "chat", alias_of="/v1/chat/completions"),
    Route("POST", "/embeddings", "embeddings", alias_of="/v1/embeddings"),
    Route("GET", "/models", "models", alias_of="/v1/models"),
)


@dataclass(frozen=True, slots=True)
class Unserved:
    """An operation of OpenAI's published API this gateway does not serve: a 404 that says so and why, rather
    than a 405 that takes a word of the path for an id (`/v1/responses/compact` under
    `/v1/responses/{response_id}`) or the list of everything served; on a path served with other methods
    (`GET /v1/chat/completions`), the 405 naming them says why too."""

    method: str
    path: str  # ending in `{name}`: every path under its prefix
    why: str


_NO_STORED_CHAT = (
    "This gateway keeps no chat completions, so it has none to list, retrieve, update or delete (OpenAI's stored "
    "chat completions are not served). To keep answers and read them back, use the Responses API: "
    "POST /v1/responses with 'store': true, then GET /v1/responses/{response_id}."
)
UNSERVED: tuple[Unserved, ...] = (
    Unserved(
        "POST",
        "/v1/responses/compact",
        "This gateway does not compact responses: a compacted output carries items encrypted by the provider that "
        "made them, which the other providers of a model group cannot read, while each turn here may be routed to "
        "any of them. Continue a long exchange with 'previous_response_id' or 'conversation' (and count its input "
        "with POST /v1/responses/input_tokens).",
    ),
    Unserved("GET", "/v1/chat/completions", _NO_STORED_CHAT),
    Unserved(ANY, "/v1/chat/completions/{completion_id}", _NO_STORED_CHAT),
)

_ANTHROPIC_PATHS = tuple(r.path.encode() for r in ROUTES if r.family is ANTHROPIC)


def family_of(path: bytes) -> Family:
    """The API family a path belongs to, matched or not: `/v1/messages...` answers in Anthropic's envelope."""
    return ANTHROPIC if path.startswith(_ANTHROPIC_PATHS) else OPENAI


Bound = tuple[Route, Handler]


def _under(path: bytes, prefix: bytes) -> bool:
    """`path` names something under `prefix` (an id after it), not `prefix` itself with a slash or two more
    (`POST /v1/chat/completions/` is the chat route mistyped, not a stored completion)."""
    return path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] not in (b"", b"/")


class RouteTable:
    """`ROUTES` bound to handlers; routes whose handler is absent (no admin API configured) are left out."""

    def __init__(
        self, routes: tuple[Route, ...], handlers: Mapping[str, Handler], unserved: tuple[Unserved, ...] = UNSERVED
    ) -> None:
        self.routes = tuple(r for r in routes if r.handler in handlers)
        self._unserved = {(u.method, u.path.encode()): u.why for u in unserved if "{" not in u.path}
        self._unserved_under = [
            (u.method, u.path[: u.path.index("{")].encode(), u.why) for u in unserved if "{" in u.path
        ]
        self._exact: dict[bytes, dict[str, Bound]] = {}
        self._prefixed: list[tuple[bytes, dict[str, Bound]]] = []
        self._segments: list[tuple[re.Pattern[bytes], dict[str, Bound]]] = []
        templates: dict[str, set[str]] = {}
        for route in self.routes:
            if "{" in route.path:
                templates.setdefault(route.path[: route.path.index("{")], set()).add(route.path)
        for route in self.routes:
            handler = handlers[route.handler]
            bound = (route, handler if route.scope is None else _scoped(handler, route))
            if "{" in route.path and len(templates[route.path[: route.path.index("{")]]) > 1:
                pattern = re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(route.path)).encode())
                methods = next((m for p, m in self._segments if p.pattern == pattern.pattern), None)
                if methods is None:
                    methods = {}
                    self._segments.append((pattern, methods))
                methods[route.method] = bound
            elif "{" in route.path:
                prefix = route.path[: route.path.index("{")].encode()
                methods = next((m for p, m in self._prefixed if p == prefix), None)
                if methods is None:
                    methods = {}
                    self._prefixed.append((prefix, methods))
                methods[route.method] = bound
            else:
                self._exact.setdefault(route.path.encode(), {})[route.method] = bound
        shown = [
            f"{r.method} {r.path}" for r in self.routes if r.alias_of is None and not r.path.startswith(ADMIN_PREFIX)
        ]
        self._served = (
            f"This gateway serves {', '.join(shown)}, and the admin API under {ADMIN_PREFIX} "
            f"(described at GET {ADMIN_PREFIX}openapi.json)."
        )

    def match(self, method: str, path: bytes) -> Bound:
        """The route and handler for a call; a 405 (with `Allow`) or 404 `ApiError` when there is none."""
        known = self._exact.get(path)
        if known is not None:
            found = known.get(method)
            if found is not None:
                return found
        if known is None:  # a served path's own word is never an id (`/v1/responses/input_tokens`)
            for pattern, methods in self._segments:
                if pattern.fullmatch(path):
                    found = methods.get(method)
                    if found is not None:
                        return found
                    known = methods
                    break
        for prefix, methods in self._prefixed:
            if path.startswith(prefix):
                found = methods.get(method) or methods.get(ANY)
                if found is not None:
                    return found
                known = known or methods
                break
        raise self._unrouted(method, path, known)

    def _unrouted(self, method: str, path: bytes, known: Mapping[str, Bound] | None) -> ApiError:
        shown = echo_path(path.decode(errors="replace"))
        why = self._unserved.get((method, path))
        if why is None:
            why = next((w for m, p, w in self._unserved_under if m in (method, ANY) and _under(path, p)), None)
        if why is not None and path not in self._exact:  # nothing is served at this path
            return ApiError(404, f"{method} {shown} is not served by this gateway. {why}", code="unknown_url")
        if known:
            allow = ", ".join(sorted(known))
            return ApiError(
                405,
                f"Method {method} is not allowed on {shown}; use {allow}." + (f" {why}" if why else ""),
                code="method_not_allowed",
                headers={"allow": allow},
            )
        return ApiError(404, f"Unknown endpoint {method} {shown}. {self._served}", code="unknown_url")
