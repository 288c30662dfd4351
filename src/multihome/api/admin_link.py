"""A link in the admin route chain: it serves its own route table and passes every other request on.

A subclass sets `routes`, `noun` (for messages), `needs_storage` (what to say without storage) and
`choices` (enum fields, listed when a body names a wrong value), checks RBAC in `authorize` (before
the body is read) and implements the handlers: (principal, path params, body, query) ->
(status, JSON-able), where query maps each parameter to its last value.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

import msgspec

from ..schema.principal import Principal
from ..schema.decoding import decode_body
from ..schema.errors import ApiError
from ..storage.errors import Conflict, Invalid, NotFound
from .admin_routes import Route, match_route
from .asgi import JSON, read_body, send_bytes

_MISSING = re.compile(r"(?:missing required|contains unknown) field `(\w+)`")


class AdminLink:
    routes: list[Route] = []
    noun = "object"
    needs_storage = "This needs storage"
    choices: dict[str, str] = {}
    without_storage: frozenset[str] = frozenset()  # handlers that work without storage

    def __init__(self, store, after_change=None, fallback=None) -> None:
        self.store = store  # storage.Store (or a stand-in until storage starts); None without storage
        self.after_change = after_change  # after a change: this replica applies it before answering
        self.fallback = fallback

    def authorize(self, principal: Principal, route: Route, params: dict[str, str]) -> None:
        raise NotImplementedError

    async def handle(self, scope, receive, send, request_id: bytes, principal: Principal) -> None:
        found = match_route(self.routes, scope["method"], scope["path"])
        if found is None:
            if self.fallback is None:
                raise ApiError(404, f"Unknown admin endpoint {scope['method']} {scope['path']}.", code="unknown_url")
            await self.fallback.handle(scope, receive, send, request_id, principal)
            return
        route, params = found
        self.authorize(principal, route, params)
        body = None
        if route.body is not None:
            raw = await read_body(scope, receive, 1 << 20)
            try:
                body = decode_body(raw, route.body)
            except ApiError as err:
                raise self._explained(err) from None
        if self.store is None and route.handler not in self.without_storage:
            raise ApiError(501, f"{self.needs_storage}: set storage.url in the config.", code="storage_not_configured")
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        try:
            status, out = await getattr(self, route.handler)(principal, params, body, query)
        except NotFound as exc:
            raise ApiError(404, f"{_sentence(exc)}.", code="not_found") from None
        except Conflict as exc:
            raise ApiError(409, f"{_sentence(exc)}.", code="conflict") from None
        except Invalid as exc:
            raise ApiError(400, f"Invalid {self.noun}: {exc}.", param=getattr(exc, "field", None),
                           code="invalid_value") from None
        if route.method != "GET" and self.after_change is not None:
            await self.after_change()
        await send_bytes(send, status, msgspec.json.encode(out), [JSON, (b"x-request-id", request_id)])

    def _explained(self, err: ApiError) -> ApiError:
        """A body decode error with the field named in `param` and, for a choice, the choices."""
        missing = _MISSING.search(err.body.message)
        if missing and err.body.param is None:
            err.body.param = missing.group(1)
        if err.body.param in self.choices:
            err.body.message = f"{err.body.message.rstrip('.')}; use one of: {self.choices[err.body.param]}."
        return err


def _sentence(exc: Exception) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:]
