"""The gateway's ASGI entry: lifespan, routing table, identity check, error envelope."""

from __future__ import annotations

import gc
import logging

from ..accounting.tracker import finish_failed, settle
from ..identity.authenticator import Authenticator
from ..routing.catalog import Catalog
from ..schema.errors import ApiError
from .anthropic_errors import send_anthropic_error
from .asgi import JSON, ClientGone, header, send_bytes, send_error
from .drain import Drain
from .openai_routes import OpenAIRoutes, new_request_id

log = logging.getLogger("multihome.gateway")

_OK = b'{"status":"ok"}'
_STARTING = b'{"status":"starting"}'
_DRAINING = b'{"status":"draining"}'
_ANTHROPIC_DOOR = b"/v1/messages"
_JSON_TYPES = (b"application/json",)


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        auth: Authenticator,
        routes: OpenAIRoutes,
        own_auth_posts=None,
        services: list | None = None,
        admin=None,
        drain: Drain | None = None,
    ) -> None:
        self.admin = admin
        self.catalog = catalog
        # Started in order at start-up, closed in reverse at shutdown (each has start() and close()).
        self.services = services if services is not None else [catalog]
        self.auth = auth
        self.routes = routes
        self.ready = False
        # Graceful stop: which calls are open, and the deadline that ends them (api/drain.py).
        self.drain = drain if drain is not None else Drain(0.0)
        # POST routes that check keys and render errors themselves (the Anthropic door: x-api-key, its envelope).
        self._own_auth_posts = own_auth_posts or {}
        self._post = {b"/v1/chat/completions": routes.chat, b"/v1/embeddings": routes.embeddings}
        self._post.update({p[3:]: h for p, h in list(self._post.items())})  # also without /v1, as OpenAI allows
        self._post[b"/v1/route/explain"] = routes.explain
        self._known_posts = frozenset((*self._post, *self._own_auth_posts))

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.drain.serve(self._http, scope, receive, send, self._refuse)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for service in self.services:
                        await service.start()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                _tune_gc()
                self.drain.start()
                self.ready = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
                self.drain.close()
                for service in reversed(self.services):
                    await service.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        request_id = new_request_id().encode()
        path = scope["raw_path"] or scope["path"].encode()
        method = scope["method"]
        try:
            if method == "POST" and path in self._own_auth_posts:
                await self._own_auth_posts[path](scope, receive, send, request_id)
            elif method == "POST" and path in self._post:
                scope["multihome.principal"] = await self.auth.authenticate(scope)
                _check_content_type(scope)
                await self._post[path](scope, receive, send, request_id)
            elif path.startswith(b"/admin/v1/") and self.admin is not None:
                if path == b"/admin/v1/openapi.json" and method == "GET":
                    await send_bytes(send, 200, _openapi("admin.openapi"), [JSON])
                else:
                    principal = await self.auth.authenticate(scope)
                    await self.admin.handle(scope, receive, send, request_id, principal)
            elif method == "GET" and path == b"/openapi.json":
                await send_bytes(send, 200, _openapi("public_openapi"), [JSON])
            elif method == "GET" and path == b"/healthz":
                await send_bytes(send, 200, _OK, [JSON])
            elif method == "GET" and path == b"/readyz":
                ready = self.ready and not self.drain.draining  # a load balancer stops sending during a drain
                body = _OK if ready else _DRAINING if self.drain.draining else _STARTING
                await send_bytes(send, 200 if ready else 503, body, [JSON])
            elif method == "GET" and path in (b"/v1/models", b"/models"):
                scope["multihome.principal"] = await self.auth.authenticate(scope)
                await self.routes.models(scope, receive, send, request_id)
            elif method == "GET" and path.startswith(b"/v1/models/"):
                scope["multihome.principal"] = await self.auth.authenticate(scope)
                await self.routes.model(scope, receive, send, request_id, scope["path"][len("/v1/models/") :])
            else:
                raise _unrouted(method, path, self._known_posts)
        except ApiError as err:
            finish_failed(scope, err)
            if path.startswith(b"/v1/messages"):  # the Anthropic door's paths answer in its envelope
                await send_anthropic_error(send, err, [(b"x-request-id", request_id)], request_id)
            else:
                await send_error(send, err, [(b"x-request-id", request_id)])
        except ClientGone:
            return
        except Exception:
            log.exception("unexpected error serving %s %s (request %s)", method, scope["path"], request_id.decode())
            err = ApiError(500, "The gateway hit an unexpected error; it has been logged.", type="server_error")
            finish_failed(scope, err)
            try:
                await send_error(send, err, [(b"x-request-id", request_id)])
            except Exception:
                pass  # the response had already started
        finally:
            settle(scope)  # whatever ended the request, a call that began accounting is recorded (and charged)

    async def _refuse(self, scope, send, err: ApiError) -> None:
        """Answer a call the drain deadline ended before its answer began, in its front door's envelope."""
        tracker = scope.get("multihome.tracker")
        request_id = (tracker.request_id if tracker is not None else new_request_id()).encode()
        headers = [(b"x-request-id", request_id)]
        if (scope["raw_path"] or scope["path"].encode()) == _ANTHROPIC_DOOR:
            await send_anthropic_error(send, err, headers, request_id)
        else:
            await send_error(send, err, headers)


_OPENAPI: dict[str, bytes] = {}


def _openapi(module: str) -> bytes:
    """An OpenAPI document (`api/<module>.py`), built and encoded on first request, then served as is."""
    doc = _OPENAPI.get(module)
    if doc is None:
        import importlib

        import msgspec

        doc = _OPENAPI[module] = msgspec.json.encode(importlib.import_module(f".{module}", __package__).openapi_document())
    return doc


def _tune_gc() -> None:
    """Keep collector pauses out of request latency.

    Everything allocated at start-up (modules, config, catalog) lives forever: freezing it means
    full collections no longer walk it. Each request allocates reference cycles (futures,
    responses), so the youngest generation still runs often, but on little.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)


def _check_content_type(scope) -> None:
    ctype = header(scope, b"content-type")
    if ctype is None:
        return
    if ctype.split(b";", 1)[0].strip().lower() not in _JSON_TYPES:
        raise ApiError(
            415,
            f"Unsupported Content-Type '{ctype.decode(errors='replace')}'; send the body as JSON with "
            "'Content-Type: application/json'.",
            code="unsupported_media_type",
        )


# Served outside the admin API (the dispatch in Gateway._http); /v1 is optional on the first three, as OpenAI allows.
_ENDPOINTS = (
    "POST /v1/chat/completions", "POST /v1/embeddings", "GET /v1/models", "GET /v1/models/{model}",
    "POST /v1/messages", "POST /v1/messages/count_tokens", "POST /v1/route/explain", "GET /healthz", "GET /readyz",
)
_GET_PATHS = frozenset({b"/v1/models", b"/models", b"/healthz", b"/readyz"})


def _allowed(path: bytes, post_paths) -> str | None:
    """The method a known path takes (for 405 and its Allow header); None for an unknown path."""
    if path in post_paths:
        return "POST"
    if path in _GET_PATHS or path.startswith(b"/v1/models/"):
        return "GET"
    return None


def _unrouted(method: str, path: bytes, post_paths) -> ApiError:
    shown = path.decode(errors="replace")
    allow = _allowed(path, post_paths)
    if allow is not None:
        return ApiError(405, f"Method {method} is not allowed on {shown}; use {allow}.", code="method_not_allowed",
                        headers={"allow": allow})
    return ApiError(
        404,
        f"Unknown endpoint {method} {shown}. This gateway serves {', '.join(_ENDPOINTS)}, and the admin API "
        "under /admin/v1/ (described at GET /admin/v1/openapi.json).",
        code="unknown_url",
    )
