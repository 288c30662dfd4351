"""The gateway's ASGI entry: lifespan, routing table, identity check, error envelope."""

from __future__ import annotations

import gc
import logging

from ..accounting.tracker import finish_failed
from ..identity.authenticator import Authenticator
from ..routing.catalog import Catalog
from ..schema.errors import ApiError
from .asgi import JSON, ClientGone, header, send_bytes, send_error
from .openai_routes import OpenAIRoutes, new_request_id

log = logging.getLogger("multihome.gateway")

_OK = b'{"status":"ok"}'
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
    ) -> None:
        self.admin = admin
        self.catalog = catalog
        # Started in order at start-up, closed in reverse at shutdown (each has start() and close()).
        self.services = services if services is not None else [catalog]
        self.auth = auth
        self.routes = routes
        self.ready = False
        # POST routes that check keys and render errors themselves (the Anthropic door: x-api-key, its envelope).
        self._own_auth_posts = own_auth_posts or {}
        self._post = {b"/v1/chat/completions": routes.chat, b"/v1/embeddings": routes.embeddings}
        self._post.update({p[3:]: h for p, h in list(self._post.items())})  # also without /v1, as OpenAI allows
        self._post[b"/v1/route/explain"] = routes.explain

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
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
                self.ready = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
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
                    await send_bytes(send, 200, _openapi("admin_openapi"), [JSON])
                else:
                    principal = await self.auth.authenticate(scope)
                    await self.admin.handle(scope, receive, send, request_id, principal)
            elif method == "GET" and path == b"/openapi.json":
                await send_bytes(send, 200, _openapi("public_openapi"), [JSON])
            elif method == "GET" and path == b"/healthz":
                await send_bytes(send, 200, _OK, [JSON])
            elif method == "GET" and path == b"/readyz":
                body = _OK if self.ready else b'{"status":"starting"}'
                await send_bytes(send, 200 if self.ready else 503, body, [JSON])
            elif method == "GET" and path in (b"/v1/models", b"/models"):
                scope["multihome.principal"] = await self.auth.authenticate(scope)
                await self.routes.models(scope, receive, send, request_id)
            elif method == "GET" and path.startswith(b"/v1/models/"):
                scope["multihome.principal"] = await self.auth.authenticate(scope)
                await self.routes.model(scope, receive, send, request_id, scope["path"][len("/v1/models/") :])
            else:
                raise _not_found(method, path, self._post)
        except ApiError as err:
            finish_failed(scope, err)
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


def _not_found(method: str, path: bytes, post_routes) -> ApiError:
    if path in post_routes:
        return ApiError(405, f"Method {method} is not allowed on {path.decode()}; use POST.", code="method_not_allowed")
    return ApiError(
        404,
        f"Unknown endpoint {method} {path.decode(errors='replace')}. This gateway serves "
        "POST /v1/chat/completions, POST /v1/embeddings and GET /v1/models.",
        code="unknown_url",
    )
