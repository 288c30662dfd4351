"""The admin API's one dispatcher: `/admin/v1/...` requests to the route the registry declares.

For every request, in this order: find the route (404 / 405), check who may call it (RBAC, before
the body is read), decode the body (400 naming the field), check what the route needs is configured
(501), run the handler, map storage errors to 404 / 409 / 400 (a stored row that
cannot be read: 409 `unreadable_row`), let this replica apply a change
(`Services.after_change`), write the change to the audit trail (on disk before the client sees the
answer), and answer.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Final
from urllib.parse import parse_qs

import msgspec

from ...audit.writer import AuditUnwritable
from ...config.decimals import exact
from ...schema.admin_fields import Problem, text
from ...schema.decoding import decode_body
from ...schema.errors import ApiError, echo, echo_path, echo_quoted, no_retry
from ...schema.principal import Principal
from ...storage.errors import Conflict, Invalid, NotFound, UnreadableRow, outage, unavailable
from ..asgi import JSON, read_body, send_bytes
from ..audit_errors import MADE_UNAUDITED, audit_api_error
from ..big_bodies import OFF_LOOP_OVER, BigBodies
from .events import admin_change
from .rbac import authorize
from .refusals import check_refused
from .registry import BY_NAME, ROUTES
from .route import CSV_MEDIA, AdminCall, Route, Services

log = logging.getLogger("multihome.admin")

_CSV = (b"content-type", b"text/csv; charset=utf-8")
_MISSING = re.compile(r"(?:missing required|contains unknown) field `(\w+)`")
_encode = msgspec.json.encode

MAX_BODY_BYTES: Final = 1 << 20
# The most JSON values an admin body may hold: well above the largest body a route takes (a policy's rules, at
# most 20,000 members and list entries: storage/policies.py). A handler walks what it was given on the event
# loop (a key's 350,000 empty roles held it ~30 ms, the decode before it ~10 ms more), so a body of more is
# refused (413) before any decode.
MAX_VALUES: Final = 32_768


class AdminApi:
    def __init__(self, services: Services, routes: tuple[Route, ...] = ROUTES, bodies: BigBodies | None = None) -> None:
        self.services = services
        self.routes = routes
        # Where a body over big_bodies.OFF_LOOP_OVER is scanned and decoded: the model doors' pool.
        self.bodies = bodies if bodies is not None else BigBodies()

    async def handle(
        self, scope: dict[str, Any], receive: Any, send: Any, request_id: bytes, principal: Principal
    ) -> None:
        method, path = scope["method"], scope["path"]
        route, params = match_route(self.routes, method, path)
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        _no_nul(query)
        self._authorize(route, principal, params, query)
        body = None
        if route.body is not None:
            raw = await read_body(scope, receive, MAX_BODY_BYTES, self.bodies)
            _no_nul_in(raw)
            if route.decimals:
                _spelled(_strings_of(raw, route.decimals), route)
            if len(raw) <= OFF_LOOP_OVER:
                body = _decode(raw, route)
            else:
                body = await self.bodies.parse(functools.partial(_decode, route=route), raw)
        out, data = await self._run(route, principal, params, query, body, path)
        if route.media == CSV_MEDIA:
            await send_bytes(send, route.status, out.encode(), [_CSV, (b"x-request-id", request_id)])
            return
        await send_bytes(send, route.status, data, [JSON, (b"x-request-id", request_id)])

    async def call(
        self,
        name: str,
        principal: Principal,
        params: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        """Run the route named `name` (its handler's name) for `principal`, as an HTTP request to it would:
        the same RBAC check, body type, storage errors and audit event. For in-process callers (the
        console, api/console/): the answer as the handler returned it (built-ins or structs).
        `body` is a mapping, converted to the route's body type (a 400 naming the field if it does not fit)."""
        route = BY_NAME[name]
        params, query = params or {}, query or {}
        self._authorize(route, principal, params, query)
        if route.body is not None:
            _spelled(body, route)
            try:
                body = msgspec.convert(body or {}, route.body, strict=False)
            except msgspec.ValidationError as exc:
                raise ApiError(
                    400, f"Invalid {route.noun or 'request'}: {echo_quoted(str(exc))}.", code="invalid_value"
                ) from None
        path = route.path.format(**params)
        out, _ = await self._run(route, principal, params, query, body, path)
        return out

    async def _run(
        self, route: Route, principal: Principal, params: dict[str, str], query: dict[str, str], body: Any, path: str
    ) -> tuple[Any, bytes]:
        """The checked request's handler, its storage errors as API errors, and its audit event:
        -> (the handler's answer, its JSON encoding; b"" for a CSV answer)."""
        s = self.services
        if route.needs is not None and route.needs.present(s) is None:
            raise ApiError(501, route.needs.message, code="storage_not_configured")
        if route.tenant_must_exist and s.store is not None and s.known_tenant is not None:
            # After the RBAC check: another tenant's admin is refused whether the tenant exists or not.
            if not await s.known_tenant(params["tenant"]):
                raise ApiError(404, str(NotFound("tenant", params["tenant"])), code="not_found")  # as GET …/{tenant}
        if route.event is not None and s.audit_log is not None:
            await s.audit_log.writable()  # a trail that cannot take the change's event: refused, nothing changed
        try:
            if route.tenant_must_have_existed:  # (in the try: its read is the store's, its outage a 503)
                await _must_have_existed(s, params.get("tenant") or query.get("tenant"))
            out = await route.handler(s, AdminCall(principal, params, body, query))
        except NotFound as exc:
            raise ApiError(404, _message(exc, route.noun), code="not_found") from None
        except Conflict as exc:
            raise ApiError(409, _message(exc, route.noun), code="conflict") from None
        except UnreadableRow as exc:  # a stored row the gateway cannot read: what is wrong, and how to mend it
            raise ApiError(409, _message(exc, "row"), code="unreadable_row", headers=no_retry()) from None
        except Invalid as exc:
            message = f"Invalid {route.noun}: {exc}." if route.noun else str(exc)
            raise ApiError(400, message, param=getattr(exc, "field", None), code="invalid_value") from None
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.warning(
                "admin %s %s: the database cannot be reached or takes no writes (%s)",
                route.method,
                path,
                outage(exc) or type(exc).__name__,
            )
            raise ApiError(
                503,
                "The gateway's database cannot be reached right now; retry shortly. Calls are still served.",
                type="server_error",
                code="storage_unavailable",
                headers={"retry-after": "5"},  # as the KMS's 503: a standby's failover or a restart takes seconds
            ) from None
        if route.media == CSV_MEDIA:
            return out, b""
        data = _encode(out)
        if route.event is not None:
            if route.refresh and s.after_change is not None:
                await s.after_change()
            if s.audit_log is not None:  # an acknowledged change is always in the trail
                try:
                    await s.audit_log.append(
                        "admin_change", admin_change(route, params, route.method, path, principal, data)
                    )
                except AuditUnwritable as exc:
                    log.error(
                        "admin %s %s: the change is stored but not in the audit trail (%s)", route.method, path, exc
                    )
                    raise audit_api_error(MADE_UNAUDITED) from None
        return out, data

    def _authorize(self, route: Route, principal: Principal, params: dict[str, str], query: dict[str, str]) -> None:
        """Who may call the route: its own check, else the RBAC table on the path's tenant; then, if a stored
        row of the caller's tenant cannot be read, whether the route mends it (before any body is read)."""
        if route.check is not None:
            route.check(principal, params, query)
        else:
            authorize(principal, route.role, params.get("tenant"))
        check_refused(self.services.refusals, route.name, principal)


def match_route(routes: tuple[Route, ...], method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route for (method, path) and its path parameters; 405 if only other methods match, else 404."""
    allowed = []
    for route in routes:
        m = route.pattern.match(path)
        if m:
            if route.method == method:
                return route, m.groupdict()
            allowed.append(route.method)
    if allowed:
        raise ApiError(
            405,
            f"Method {method} is not allowed on {echo_path(path)}; use {' or '.join(allowed)}.",
            code="method_not_allowed",
        )
    raise ApiError(
        404, f"Unknown admin endpoint {method} {echo_path(path)}. See GET /admin/v1/openapi.json.", code="unknown_url"
    )


# JSON's escape of a NUL: a backslash that is not itself escaped (an even run of them before it), then u0000.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _no_nul_in(raw: bytes) -> None:
    """A 400 for a body holding a NUL, naming the first string that holds one as the field checks name a control
    character: not every field is checked before it is read (an id in a body is looked up), and PostgreSQL's
    text refuses a NUL (a 500)."""
    if raw.find(b"u0000") < 0 or _NUL_ESCAPE.search(raw) is None:  # find first: the scan only when it may be
        return
    try:
        todo: list[tuple[str, Any]] = [("body", msgspec.json.decode(raw))]
    except (msgspec.DecodeError, RecursionError):
        return  # not JSON this reads: the route's decoder refuses it
    while todo:
        at, value = todo.pop()
        found: Problem | None = None
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                path = key if at == "body" else f"{at}.{key}"
                found = found or (text(key, path, max_len=len(key)) if "\x00" in key else None)
                todo.append((path, item))
        elif isinstance(value, list):
            todo.extend((f"{at}[{n}]", item) for n, item in reversed(list(enumerate(value))))
        elif isinstance(value, str) and "\x00" in value:
            found = text(value, at, max_len=len(value))
        if found is not None:
            raise ApiError(400, found.message, param=found.field, code="invalid_value")


def _no_nul(query: dict[str, str]) -> None:
    """A NUL in a query value names nothing stored (PostgreSQL's text refuses one: a read would be a 500)."""
    for name, value in query.items():
        if value.find("\x00") >= 0 or name.find("\x00") >= 0:
            raise ApiError(
                400,
                f"The query parameter '{echo(name)}' holds a NUL character, which names nothing here.",
                param=name,
                code="invalid_value",
            )


def _strings_of(raw: bytes, names: tuple[str, ...]) -> dict[str, str]:
    """The top-level members `names` of a JSON object body that are strings (a number is spelled as JSON writes
    one already); empty for what is no JSON object, which the route's typed decode refuses."""
    try:
        members = _top.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return {}
    found: dict[str, str] = {}
    for name in names:
        value = bytes(members.get(name, b""))
        if value[:1] == b'"':
            try:
                found[name] = msgspec.json.decode(value)
            except msgspec.DecodeError:  # not UTF-8: the typed decode refuses it, naming it
                continue
    return found


_top = msgspec.json.Decoder(dict[str, msgspec.Raw])


async def _must_have_existed(s: Services, tenant: str | None) -> None:
    """404 for a tenant id that is neither a tenant now nor in the admin events (never one): its history is none
    to read. A live tenant costs the lookup in memory; only an unknown id reads the store."""
    if tenant is None or s.store is None or s.known_tenant is None or await s.known_tenant(tenant):
        return
    if not await s.store.tenant_in_history(tenant):
        raise ApiError(404, str(NotFound("tenant", tenant)), code="not_found")


def _spelled(body: Any, route: Route) -> None:
    """A 400 naming the first of the route's decimal fields (`Route.decimals`) that is not spelled as JSON writes
    a number (config/decimals.py); `body` a mapping (the other members and types: the typed decode's)."""
    if not isinstance(body, dict):
        return
    for name in route.decimals:
        value = body.get(name)
        if value is None:
            continue
        try:
            exact(value)
        except ValueError as exc:
            raise ApiError(
                400, f"Invalid {route.noun or 'request'}: {name} {exc}.", param=name, code="invalid_value"
            ) from None


def _decode(raw: bytes, route: Route) -> Any:
    try:
        return decode_body(raw, route.body, MAX_VALUES)
    except ApiError as err:
        if route.choices is None:
            raise
        # Name the missing or unknown field in `param` and, for a field with choices, list them.
        missing = _MISSING.search(err.body.message)
        if missing and err.body.param is None:
            err.body.param = missing.group(1)
        if err.body.param in route.choices:
            err.body.message = f"{err.body.message.rstrip('.')}; use one of: {route.choices[err.body.param]}."
        raise err from None


def _message(exc: Exception, noun: str | None) -> str:
    """The store's message; as a sentence for the resources that word their errors (`noun` set)."""
    text = str(exc)
    return f"{text[:1].upper()}{text[1:]}." if noun else text
