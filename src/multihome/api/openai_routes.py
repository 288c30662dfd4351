"""OpenAI-compatible routes: chat completions (unary and SSE), embeddings, models."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import msgspec

from ..schema.bounded import Decoder
from ..providers.base import CREDENTIALS_REJECTED
from ..routing.attempts import Served, attempts_header
from ..routing.catalog import Catalog, GroupRuntime
from ..schema import estimate
from ..routing.planner import RequestShape
from ..routing.router import Router
from ..schema import header_text
from ..schema.chat import ParsedChat, parse_chat
from ..schema.decoding import top_level
from ..schema.embeddings import parse_embeddings
from ..schema.errors import ApiError
from .asgi import JSON, header, read_body, send_bytes

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class _UpstreamErrorPeek(msgspec.Struct):
    message: str | None = None
    code: str | int | None = None
    param: str | None = None
    type: str | None = None


class _UpstreamError(msgspec.Struct):
    error: _UpstreamErrorPeek | str | None = None


_upstream_error = Decoder(_UpstreamError)


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def _served_headers(request_id: bytes, served: Served) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-request-id", request_id),
        (b"x-multihome-deployment", header_text.text(served.deployment.name).encode()),
        (b"x-multihome-attempts", attempts_header(served.attempts).encode()),
    ]
    if served.dropped:
        # Parameters the serving provider cannot honour; the adapter dropped them (docs/translation.md).
        # Unknown fields are named by the client: encoded, so no name can break the response head.
        headers.append((b"x-multihome-dropped-params", header_text.names(served.dropped).encode()))
    return headers


def upstream_client_error(served: Served) -> ApiError:
    """An upstream 4xx, re-shaped into OpenAI's envelope and attributed to the deployment."""
    dep = served.deployment
    reshape = getattr(dep.adapter, "client_error_body", None)
    body = reshape(served.status, served.body) if reshape is not None else served.body
    try:
        err = _upstream_error.decode(body).error
    except msgspec.DecodeError:
        err = None
    detail = err.message if isinstance(err, _UpstreamErrorPeek) and err.message else (err if isinstance(err, str) else "")
    code = err.code if isinstance(err, _UpstreamErrorPeek) and err.code is not None else None
    param = err.param if isinstance(err, _UpstreamErrorPeek) else None
    rejected = bool(served.attempts) and served.attempts[-1].outcome == CREDENTIALS_REJECTED
    if served.status in (401, 403) or rejected:
        # The client's key was fine; the gateway's own credentials for this provider were not.
        return ApiError(
            502,
            f"Deployment '{dep.name}' (provider '{dep.provider}') rejected the gateway's credentials "
            f"(HTTP {served.status}). An operator must fix the provider's credentials.",
            type="server_error",
            code="upstream_auth_failed",
        )
    message = f"Deployment '{dep.name}' rejected the request (HTTP {served.status})" + (f": {detail}" if detail else ".")
    return ApiError(served.status, message, param=param, code=str(code) if code is not None else None)


class _Narrowing(msgspec.Struct):
    deployments: list[str] | None = None


class _Extension(msgspec.Struct):
    """The `multihome` body extension (`extra_body={"multihome": {...}}` in the OpenAI SDK)."""

    route: _Narrowing | None = None


_extension = Decoder(_Extension)  # reads a field decode_views only skipped: nesting is a 400 too


def narrowing(scope, raw: dict[str, msgspec.Raw], group: GroupRuntime) -> frozenset[str] | None:
    """Deployments the client restricted this call to: header `x-multihome-deployments: a,b` or
    body `{"multihome": {"route": {"deployments": [...]}}}`. Only a subset of the group's own
    deployments is allowed, so a client can narrow routing but never widen it."""
    names: list[str] | None = None
    ext = raw.pop("multihome", None)  # never forwarded upstream
    if ext is not None:
        try:
            route = _extension.decode(ext).route
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"Invalid 'multihome' extension: {exc}.", param="multihome") from None
        names = route.deployments if route else None
    value = header(scope, b"x-multihome-deployments")
    if value is not None:
        names = [n.strip() for n in value.decode(errors="replace").split(",") if n.strip()]
    if names is None:
        return None
    known = {d.name for d in group.deployments}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ApiError(
            400,
            f"Cannot narrow model '{group.name}' to {', '.join(unknown) or 'nothing'}: a request may only pick among "
            f"the group's deployments ({', '.join(sorted(known))}).",
            param="x-multihome-deployments",
            code="invalid_route_narrowing",
        )
    return frozenset(names)


def chat_shape(scope, parsed: ParsedChat, group: GroupRuntime, gate=None, endpoint: str = "chat") -> RequestShape:
    shape = RequestShape(parsed.needs, parsed.stream, parsed.request, narrowing(scope, parsed.raw, group))
    if gate is not None:
        shape.policy = gate.admit(scope["multihome.principal"], group, endpoint, scope.get("multihome.tracker"))
    return shape


def embeddings_shape(scope, parsed, group: GroupRuntime, gate=None) -> RequestShape:
    shape = RequestShape(parsed.needs, False, None, narrowing(scope, parsed.raw, group))
    if gate is not None:
        shape.policy = gate.admit(scope["multihome.principal"], group, "embeddings", scope.get("multihome.tracker"))
    return shape


def begin_call(scope, accounting, request_id: bytes, endpoint: str, body: bytes, group: GroupRuntime, request):
    """Start accounting for a call (None when nothing is configured); the gateway finishes it on errors."""
    if accounting is None or not accounting.enabled:
        return None
    tracker = accounting.begin(request_id.decode(), endpoint, scope["multihome.principal"], body)
    tracker.model_group, tracker.request = group.name, request
    if accounting.trace_context:  # only with telemetry on (docs/telemetry.md)
        tracker.traceparent, tracker.tracestate = header(scope, b"traceparent"), header(scope, b"tracestate")
    scope["multihome.tracker"] = tracker
    return tracker


async def admit_call(tracker, group: GroupRuntime, shape: RequestShape, max_output: int | None) -> list:
    """Limits and budgets for the deployments policy allows; the response headers they add."""
    if tracker is None:
        return []
    decision = getattr(shape.policy, "decision", None)
    deployments = [d for d in group.deployments if decision is None or d.name in decision.deployments]
    headers = await tracker.admit(group, deployments, max_output)
    skip = getattr(tracker.ticket, "skip", None)
    if skip:
        shape.exclude = {name: "deployment rate limit reached" for name in skip}
    return [(k if isinstance(k, bytes) else k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers]


class OpenAIRoutes:
    def __init__(self, catalog: Catalog, router: Router, max_body: int, gate=None, accounting=None) -> None:
        self.catalog = catalog
        self.router = router
        self.max_body = max_body
        self.gate = gate  # api.policy_gate.PolicyGate: who may reach which deployments
        self.accounting = accounting  # accounting.tracker.Accounting: limits, audit, metering
        created = int(time.time())
        self._models = msgspec.json.encode(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": created, "owned_by": "multihome"}
                    for name in catalog.groups
                ],
            }
        )
        self._model_bodies = {
            name: msgspec.json.encode({"id": name, "object": "model", "created": created, "owned_by": "multihome"})
            for name in catalog.groups
        }

    def _group(self, name: str) -> GroupRuntime:
        group = self.catalog.groups.get(name)
        if group is None:
            known = ", ".join(sorted(self.catalog.groups)) or "none"
            raise ApiError(
                404,
                f"The model '{name}' does not exist on this gateway. Available models: {known}.",
                param="model",
                code="model_not_found",
            )
        return group

    async def models(self, scope, receive, send, request_id: bytes) -> None:
        await send_bytes(send, 200, self._models, [JSON, (b"x-request-id", request_id)])

    async def model(self, scope, receive, send, request_id: bytes, name: str) -> None:
        body = self._model_bodies.get(name)
        if body is None:
            self._group(name)
        await send_bytes(send, 200, body, [JSON, (b"x-request-id", request_id)])

    async def chat(self, scope, receive, send, request_id: bytes) -> None:
        body = await read_body(scope, receive, self.max_body)
        parsed = parse_chat(body)
        group = self._group(parsed.request.model)
        tracker = begin_call(scope, self.accounting, request_id, "chat", body, group, parsed.request)
        shape = chat_shape(scope, parsed, group, self.gate)
        extra = await admit_call(tracker, group, shape, estimate.output_tokens(parsed.request))
        rid = request_id.decode()

        async def build(dep):
            return _with_request_id(await dep.adapter.chat_request(parsed, dep.upstream_model), rid)

        served = await self.router.route(group, shape, build, _chat_response, forward_usage=parsed.include_usage)
        await durable(tracker, served)
        headers = [*_served_headers(request_id, served), *extra]
        if served.stream is not None:
            await _send_stream(scope, receive, send, served, headers, stream_finisher(tracker, served))
            return
        await self._send_unary(send, served, headers, tracker)

    async def embeddings(self, scope, receive, send, request_id: bytes) -> None:
        body = await read_body(scope, receive, self.max_body)
        parsed = parse_embeddings(body)
        group = self._group(parsed.request.model)
        tracker = begin_call(scope, self.accounting, request_id, "embeddings", body, group, parsed.request)
        shape = embeddings_shape(scope, parsed, group, self.gate)
        extra = await admit_call(tracker, group, shape, 0)  # embeddings produce no output tokens
        rid = request_id.decode()

        async def build(dep):
            return _with_request_id(await dep.adapter.embeddings_request(parsed, dep.upstream_model), rid)

        served = await self.router.route(group, shape, build, _embeddings_response)
        await durable(tracker, served)
        await self._send_unary(send, served, [*_served_headers(request_id, served), *extra], tracker)

    async def explain(self, scope, receive, send, request_id: bytes) -> None:
        """The plan for a chat or embeddings request, computed by the same code as a real call; nothing is sent."""
        body = await read_body(scope, receive, self.max_body)
        keys = top_level(body)
        if "input" in keys and "messages" not in keys:
            parsed_e = parse_embeddings(body)
            group = self._group(parsed_e.request.model)
            shape = embeddings_shape(scope, parsed_e, group, self.gate)
        else:
            parsed = parse_chat(body)
            group = self._group(parsed.request.model)
            shape = chat_shape(scope, parsed, group, self.gate)
        out = msgspec.json.encode(self.router.explain(group, shape))
        await send_bytes(send, 200, out, [JSON, (b"x-request-id", request_id)])

    async def _send_unary(self, send, served: Served, headers: list, tracker=None) -> None:
        if served.status >= 400:
            err = upstream_client_error(served)
            extra = [(k.encode(), v.encode()) for k, v in err.headers.items()]
            await send_bytes(send, err.status, err.to_bytes(), [JSON, *headers, *extra])
            if tracker is not None:
                tracker.finish(err.status, "client_error", served=served, error_code=err.body.code)
            return
        await send_bytes(send, served.status, served.body, [JSON, *headers])
        if tracker is not None:
            finish_unary(tracker, served, served.body)


async def durable(tracker, served: Served) -> None:
    """Note that an upstream answered (from here on the call is charged, whatever happens to the
    answer), then wait until the call's start is on the audit trail; without that the client gets no answer."""
    if tracker is None:
        return
    tracker.served = served
    try:
        await tracker.durable()
    except BaseException:
        if served.stream is not None:
            served.stream.close()  # the upstream call is abandoned, not leaked
        raise


def finish_unary(tracker, served: Served, sent: bytes) -> None:
    tracker.finish_produced(served, served.status, "ok", response_sha256=hashlib.sha256(sent).hexdigest())


def stream_finisher(tracker, served: Served):
    """What _send_stream calls once the stream is over (or abandoned): the call's record."""
    if tracker is None:
        return None
    relay = served.stream

    def done(outcome: str, digest, first_byte_ms: float | None) -> None:
        if outcome == "ok" and (relay.error or not relay.done):
            outcome = "stream_error"
        tracker.finish_produced(served, 200, outcome, response_sha256=digest.hexdigest(), first_byte_ms=first_byte_ms)

    return done


def _chat_response(dep, body: bytes, headers) -> bytes:
    return dep.adapter.chat_response(body, dep.upstream_model)


def _embeddings_response(dep, body: bytes, headers) -> bytes:
    return dep.adapter.embeddings_response(body, dep.upstream_model, headers)


def _with_request_id(req, request_id: str):
    req.headers = {**req.headers, "x-request-id": request_id}
    return req


async def _send_stream(scope, receive, send, served: Served, headers: list[tuple[bytes, bytes]], on_done=None) -> None:
    relay = served.stream
    scope["multihome.stream"] = relay  # a graceful stop ends it with an error event (api/drain.py)
    task = asyncio.current_task()
    gone = asyncio.Event()
    digest = hashlib.sha256() if on_done is not None else None
    outcome, first_byte_ms, t0 = "cancelled", None, time.perf_counter()

    async def watch_disconnect() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                task.cancel()
                return

    watcher = asyncio.create_task(watch_disconnect())
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *headers]})
        await send({"type": "http.response.body", "body": served.first, "more_body": True})
        if digest is not None:
            first_byte_ms = (time.perf_counter() - t0) * 1000
            digest.update(served.first)
        async for piece in relay.rest():
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            if digest is not None:
                digest.update(piece)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        outcome = "ok"
    except asyncio.CancelledError:
        if not gone.is_set():
            raise
        task.uncancel()
    except OSError:
        pass  # the client went away while we were writing
    finally:
        watcher.cancel()
        relay.close()
        if on_done is not None:
            on_done(outcome, digest, first_byte_ms)
