"""The gateway's ASGI entry: lifespan, the route table, identify, one error path, the access log.

Every HTTP call becomes a `Call` (api/pipeline.py), is matched against the route table
(api/routes.py), identified when its route asks for a key, and handed to its handler. Whatever
ends it, an error is answered here in its API family's envelope, the call's accounting is
settled, and one access-log line is written (api/access_log.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec

from ..accounting.tracker import finish_failed, settle
from ..audit.writer import AuditUnwritable
from ..crypto.errors import KmsError
from ..identity.authenticator import Authenticator, credential_of
from ..providers.transport import on_loop_thread
from ..schema.errors import ApiError
from ..storage.errors import outage
from . import access_log
from .asgi import HUNG_UP, JSON, ClientGone, Message, Receive, Scope, Send, header
from .audit_errors import audit_api_error
from .drain import Drain
from .kms_errors import READS, for_request, kms_api_error
from .pipeline import Call, Pipeline, new_request_id
from .render import send_failure, send_json
from .routes import ROUTES, Handler, RouteTable, family_of

log = logging.getLogger("multihome.gateway")


class Service(Protocol):
    """A long-lived part (storage, the audit log, the health prober...) the gateway starts, in order,
    when the ASGI lifespan starts, and closes in reverse when it ends."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...


_OK = b'{"status":"ok"}'
_STARTING = b'{"status":"starting"}'
_DRAINING = b'{"status":"draining"}'
_JSON_TYPES = (b"application/json",)


class Gateway:
    def __init__(
        self,
        pipeline: Pipeline,
        auth: Authenticator,
        doors: Mapping[str, Handler],
        services: list[Service] | None = None,
        admin: Any = None,
        drain: Drain | None = None,
    ) -> None:
        self.admin = admin  # the admin API: handle(scope, receive, send, request_id, principal)
        self.pipeline = pipeline
        self.catalog = pipeline.catalog
        # Started in order at start-up, closed in reverse at shutdown.
        self.services: list[Service] = services if services is not None else [self.catalog]
        self.auth = auth
        self.ready = False
        self.listening: str | None = None  # "http://host:port", logged once start-up is complete
        # Told of every finished HTTP request, whatever its route or status (metrics: observability/metrics.py).
        self.on_request: Callable[[Call], None] | None = None
        # Graceful stop: which calls are open, and the deadline that ends them (api/drain.py).
        self.drain = drain if drain is not None else Drain(0.0)
        own: dict[str, Handler] = {"health": self._health, "ready": self._ready, "openapi": self._openapi}
        if admin is not None:
            own.update(admin=self._admin, admin_openapi=self._admin_openapi)
        self.table = RouteTable(ROUTES, {**doors, **own})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            call = Call(scope, new_request_id().encode())
            drain = self.drain
            try:  # Drain.serve, inline: one coroutine less per call
                task = drain.enter(call)
                if task is None:
                    await self._refuse(call, send, drain.error())
                    return
                try:
                    await self._http(call, receive, send)
                except asyncio.CancelledError:
                    if scope.get(HUNG_UP):  # its client left before the answer began (api/head_limit.py)
                        task.uncancel()
                        call.status = 499
                        return
                    if not drain.ended(task):
                        raise
                    await drain.refuse_ended(self._refuse, call, send)
                finally:
                    drain.leave(task)
            finally:
                access_log.write(call, drain.loop)
                if self.on_request is not None:
                    self.on_request(call)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for service in self.services:
                        await service.start()
                except Exception as exc:
                    if (why := outage(exc)) is None:
                        log.exception("start-up failed")
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    # The database away, or a standby that takes no writes (a migration or a first write at
                    # start): one line with the driver's words, not a traceback nor the statement and its values.
                    # No "message": the server (uvicorn) would log it again under this line.
                    log.error("start-up failed: the database cannot be reached or takes no writes (%s)", why)
                    await send({"type": "lifespan.startup.failed"})
                    return
                _tune_gc()
                on_loop_thread()
                self.drain.start()
                self.ready = True
                if self.listening is not None:
                    log.info(
                        "multihome listening on %s (%s, %s)",
                        self.listening,
                        _count(len(self.catalog.deployments), "deployment"),
                        _count(len(self.catalog.groups), "model group"),
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
                self.drain.close()
                for service in reversed(self.services):
                    await service.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, call: Call, receive: Receive, send: Send) -> None:
        scope = call.scope
        path = scope["raw_path"] or scope["path"].encode()
        route = None
        try:
            # A NUL names nothing served here (and PostgreSQL's text refuses one). find, not `in`: on 3.11
            # `bytes in bytes` first tries the operand as an integer, formatting and clearing a TypeError.
            if path.find(b"%00") >= 0:
                raise ApiError(404, "No resource has a NUL character (%00) in its path.", code="unknown_url")
            route, handler = self.table.match(scope["method"], path)
            call.route = route
            if route.identify:
                family = route.family
                if family.missing_key is not None and credential_of(scope) is None and not self.auth.open_access:
                    raise family.missing_key()
                principal = self.auth.at_once(scope)  # a key from the environment: no coroutine
                call.principal = principal if principal is not None else await self.auth.deferred(scope)
                if route.method == "POST":
                    _check_content_type(scope)
            await handler(call, receive, send)
        except ApiError as err:
            err = for_request(err, scope["method"])
            finish_failed(call.tracker, err)
            await send_failure(call, send, route.family if route is not None else family_of(path), err)
        except KmsError as exc:  # a seal or open on a request path: fail closed with a 503 naming the KMS
            refused = kms_api_error(exc, read=scope["method"] in READS)
            finish_failed(call.tracker, refused)
            await send_failure(call, send, route.family if route is not None else family_of(path), refused)
        except AuditUnwritable as exc:  # its event could not be written: refused, never served unaudited
            log.warning("refused %s %s: %s", scope["method"], scope["path"], exc)
            refused = audit_api_error()
            finish_failed(call.tracker, refused)
            try:
                await send_failure(call, send, route.family if route is not None else family_of(path), refused)
            except Exception:
                pass  # the response had already started
        except ClientGone:
            return
        except Exception:
            log.exception(
                "unexpected error serving %s %s (request %s)", scope["method"], scope["path"], call.request_id.decode()
            )
            failure = ApiError(500, "The gateway hit an unexpected error; it has been logged.", type="server_error")
            finish_failed(call.tracker, failure)
            try:
                await send_failure(call, send, route.family if route is not None else family_of(path), failure)
            except Exception:
                pass  # the response had already started
        finally:
            tracker = call.tracker
            # Whatever ended the request, a call that began accounting is recorded (and charged); one already
            # finished (the usual case) without entering settle.
            if tracker is not None and not tracker.finished:
                settle(tracker)

    async def _refuse(self, call: Call, send: Send, err: ApiError) -> None:
        """Answer a call the drain deadline ended before its answer began, in its front door's envelope."""
        path = call.scope["raw_path"] or call.scope["path"].encode()
        await send_failure(call, send, family_of(path), err)

    async def _health(self, call: Call, receive: Receive, send: Send) -> None:
        await send_json(call, send, 200, _OK, [JSON])

    async def _ready(self, call: Call, receive: Receive, send: Send) -> None:
        ready = self.ready and not self.drain.draining  # a load balancer stops sending during a drain
        body = _OK if ready else _DRAINING if self.drain.draining else _STARTING
        await send_json(call, send, 200 if ready else 503, body, [JSON])

    async def _openapi(self, call: Call, receive: Receive, send: Send) -> None:
        await send_json(call, send, 200, _openapi("public_openapi"), [JSON])

    async def _admin_openapi(self, call: Call, receive: Receive, send: Send) -> None:
        await send_json(call, send, 200, _openapi("admin.openapi"), [JSON])

    async def _admin(self, call: Call, receive: Receive, send: Send) -> None:
        # Identified here rather than by the route table: a caller whose tenant is refused because a stored
        # row cannot be read is let in, and the admin API narrows what it may do (api/admin/refusals.py).
        call.principal = await self.auth.admin(call.scope)
        if call.scope["method"] == "POST":
            _check_content_type(call.scope)

        async def noting_status(message: Message) -> None:  # the admin API sends its own answers
            if message["type"] == "http.response.start":
                call.status = message["status"]
            await send(message)

        await self.admin.handle(call.scope, receive, noting_status, call.request_id, call.principal)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_OPENAPI: dict[str, bytes] = {}


def _openapi(module: str) -> bytes:
    """An OpenAPI document (`api/<module>.py`), built and encoded on first request, then served as is."""
    doc = _OPENAPI.get(module)
    if doc is None:
        import importlib

        built = importlib.import_module(f".{module}", __package__).openapi_document()
        doc = _OPENAPI[module] = msgspec.json.encode(built)
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


def _check_content_type(scope: Scope) -> None:
    ctype = header(scope, b"content-type")
    if ctype is None or ctype == b"application/json":  # what nearly every client sends, as is
        return
    if ctype.split(b";", 1)[0].strip().lower() not in _JSON_TYPES:
        raise ApiError(
            415,
            f"Unsupported Content-Type '{ctype.decode(errors='replace')}'; send the body as JSON with "
            "'Content-Type: application/json'.",
            code="unsupported_media_type",
        )
