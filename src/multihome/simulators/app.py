"""The request pipeline shared by every simulator kind.

route -> log -> auth -> (cache hit: write and return) -> decode -> fault -> validate -> reply.

Kinds (``openai/api.py``, ``azure/api.py``, ... one folder per kind) subclass :class:`ProviderApp` and fill in the hooks:
routing, auth, error envelope, headers and response decoration. The fast path for a repeated
non-streaming request is one dict lookup and one ``transport.write`` of cached bytes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from . import admin
from .chat import CONTENT, BadRequest, ChatPlan, plan_chat, render_completion, stream_chunks
from .config import SimulatorConfig
from .content import short_hash
from .embeddings import render_embeddings
from .errors import ErrorSpec, error_for_status
from .faults import Fault, FaultError, parse_fault_header
from .http import Connection, Request, build_response, status_line, with_close
from .responses import chat_body, render_response, response_events
from .state import LogEntry, SimState

log = logging.getLogger(__name__)
CHAT, EMBEDDINGS, MODELS, MODEL, RESPONSES = "chat", "embeddings", "models", "model", "responses"
INFERENCE = (CHAT, EMBEDDINGS, RESPONSES)
STREAMING = (CHAT, RESPONSES)
FROM_TABLE = object()  # "no header fault: consult the run-time table once the model is known"
_ROUTE_CACHE_MAX = 4096

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_now = time.time


class Route:
    """What a URL means: an operation, maybe a deployment from the path, maybe an error."""

    __slots__ = ("op", "deployment", "api_version", "error")

    def __init__(
        self,
        op: str | None,
        deployment: str | None = None,
        api_version: str | None = None,
        error: ErrorSpec | None = None,
    ):
        self.op = op
        self.deployment = deployment
        self.api_version = api_version
        self.error = error


def safe_header_value(s: str) -> bytes:
    """Names from request bodies end up in headers: keep them to printable latin-1."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in s).encode()


def frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunked-encoding chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Reply:
    """A prepared answer: a full response, a stream, a dropped connection or a hang."""

    __slots__ = ("kind", "payload", "plan", "headers", "status", "events")

    def __init__(
        self,
        kind: str,
        payload: bytes = b"",
        plan: ChatPlan | None = None,
        headers: bytes = b"",
        status: int = 200,
        events: Iterator[tuple[bool, dict[str, Any]]] | None = None,
    ):
        self.kind = kind  # "response" | "stream" | "cut" | "hang"
        self.payload = payload
        self.plan = plan
        self.headers = headers
        self.status = status
        self.events = events  # a Responses API stream: (is_content, event), framed with its event name

    def stream_plan(self) -> ChatPlan:
        """The plan a "stream" reply renders (every one carries it)."""
        assert self.plan is not None
        return self.plan


class ProviderApp:
    kind = "base"
    auth_headers: tuple[bytes, ...] = (b"authorization",)

    def __init__(self, config: SimulatorConfig, state: SimState):
        self.config = config
        self.state = state
        self.name = config.name
        self.connections: set[Connection] = set()
        self.created = int(_now())  # one timestamp per simulator keeps replies byte-identical
        self.fingerprint = "fp_" + short_hash(config.name, size=5)
        self.models = config.deployment_map()  # None = accept any name
        self._cache: dict[tuple[bytes, bytes], tuple[str | None, bool, bytes]] = {}
        self._routes: dict[tuple[bytes, bytes], Route] = {}

    # -- hooks for kinds -------------------------------------------------------------------
    def route(self, method: bytes, path: bytes, query: bytes) -> Route:
        raise NotImplementedError

    def auth_error(self, headers: dict) -> ErrorSpec | None:
        raise NotImplementedError

    def error_payload(self, err: ErrorSpec) -> dict:
        raise NotImplementedError

    def response_headers(self, rid: str, deployment: str | None) -> bytes:
        """Header lines for a reply (without content-type/length)."""
        raise NotImplementedError

    def unknown_model(self, name: str) -> ErrorSpec:
        raise NotImplementedError

    def throttle_headers(self, seconds: float) -> bytes:
        return b"retry-after: %d\r\nretry-after-ms: %d\r\n" % (math.ceil(seconds), round(seconds * 1000))

    def content_filter_prompt(self) -> bytes:
        raise NotImplementedError

    def completion_extra(self, plan: ChatPlan, fault: Fault | None) -> dict:
        return {}

    def decorate_completion(self, body: dict, plan: ChatPlan, fault: Fault | None) -> None:
        pass

    def stream_events(self, plan: ChatPlan, fault: Fault | None) -> Iterator[tuple[str, int, dict]]:
        return stream_chunks(plan, self.created, self.fingerprint, self.completion_extra(plan, fault))

    def model_list(self) -> list[str]:
        if self.models is not None:
            return list(self.models)
        return ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]

    # -- entry point -----------------------------------------------------------------------
    def handle(self, conn: Connection, req: Request):
        url = req.url
        method = req.method
        route = self._routes.get((method, url))
        if route is None:
            path, _, query = url.partition(b"?")
            if path.startswith(b"/_sim/"):
                return admin.handle(self, conn, req, path, query)
            route = self.route(method, path, query)
            if len(self._routes) >= _ROUTE_CACHE_MAX:
                self._routes.clear()
            self._routes[(method, url)] = route
        headers = req.headers
        st = self.state
        rid = headers.get(b"x-request-id")
        entry = LogEntry(
            _now(),
            method.decode(),
            url.partition(b"?")[0].decode("latin-1"),  # the query may carry secrets: keep it out
            route.api_version,
            any(h in headers for h in self.auth_headers),
            rid.decode("latin-1") if rid is not None else None,
        )
        entry.body = req.body
        st.log.append(entry)
        st.stats.requests += 1
        if route.error is not None:
            return self._send_error(conn, req, entry, route.error)
        err = self.auth_error(headers)
        if err is not None:
            return self._send_error(conn, req, entry, err)

        fault_header = headers.get(b"x-sim-fault")
        op = route.op
        if op in INFERENCE and fault_header is None and req.http_11:
            hit = self._cache.get((url, req.body))
            if hit is not None:
                model, entry.stream, payload = hit
                entry.model = model
                fault = st.faults.take(model) if st.faults.rules else None
                if fault is None:
                    entry.outcome = "ok"
                    st.stats.completed += 1
                    if req.keep_alive:
                        conn.write(payload)
                    else:
                        conn.write(with_close(payload))
                        conn.finish(False)
                    return None
                return self._slow(conn, req, route, entry, fault)
        if fault_header is not None:
            try:
                fault = parse_fault_header(fault_header.decode("latin-1"))
            except FaultError as e:
                return self._send_error(
                    conn, req, entry, ErrorSpec(400, f"Invalid x-sim-fault header: {e}", code="invalid_sim_fault")
                )
            return self._slow(conn, req, route, entry, fault)
        return self._slow(conn, req, route, entry, FROM_TABLE if op in INFERENCE else None)

    # -- slow path -------------------------------------------------------------------------
    def _slow(self, conn: Connection, req: Request, route: Route, entry: LogEntry, fault: Any):
        """``fault``: a Fault, None, or FROM_TABLE (look it up by model once the body is decoded)."""
        body: Any = None
        model = route.deployment
        if route.op in INFERENCE:
            try:
                body = _decode(req.body)
            except msgspec.DecodeError:
                return self._send_error(
                    conn,
                    req,
                    entry,
                    ErrorSpec(
                        400,
                        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent "
                        "was not valid JSON.)",
                    ),
                )
            if not isinstance(body, dict):
                return self._send_error(conn, req, entry, ErrorSpec(400, "The request body must be a JSON object."))
            if model is None:
                m = body.get("model")
                model = m if isinstance(m, str) else None
            entry.model = model
            entry.stream = route.op in STREAMING and body.get("stream") is True
        return self._answer(conn, req, route, entry, body, model, fault)

    def _answer(
        self, conn: Connection, req: Request, route: Route, entry: LogEntry, body: Any, model: str | None, fault: Any
    ):
        """The shared tail of every kind's pipeline: pick the fault, prepare the reply, send it now or later."""
        if fault is FROM_TABLE:
            fault = self.state.faults.take(model) if self.state.faults.rules else None
        if fault is not None:
            entry.fault = fault.describe() or None
        try:
            reply = self._prepare(req, route, body, model, fault)
        except BadRequest as e:
            reply = self._error_reply(self.bad_request(e), route.deployment)
        delay = (fault.latency_ms + fault.first_byte_ms) if fault else 0
        if delay or reply.kind in ("stream", "hang"):
            return self._later(conn, req, entry, reply, fault, delay / 1000)
        self._deliver(conn, req, entry, reply)
        return None

    def bad_request(self, e: BadRequest) -> ErrorSpec:
        """How this provider reports a request it refuses (kinds override the shape)."""
        return ErrorSpec(e.status, e.message, "invalid_request_error", e.code, e.param)

    def _prepare(self, req: Request, route: Route, body: Any, model: str | None, fault: Fault | None) -> Reply:
        op = route.op
        if fault is not None:
            if fault.hang:
                return Reply("hang")
            if fault.throttle is not None:
                err = error_for_status(429)
                msg = f"Rate limit reached for requests. Please try again in {fault.throttle:g}s."
                return self._error_reply(
                    err._replace(message=msg), route.deployment, self.throttle_headers(fault.throttle)
                )
            if fault.status is not None and fault.status >= 400:
                spec = error_for_status(fault.status)
                if fault.error_code:
                    spec = spec._replace(code=fault.error_code, message=f"{spec.message} ({fault.error_code})")
                return self._error_reply(spec, route.deployment)
            if fault.cut_after is not None and not (
                op in STREAMING and isinstance(body, dict) and body.get("stream") is True
            ):
                return Reply("cut")
            if fault.content_filter == "prompt" and op in STREAMING:
                head = b"content-type: application/json\r\n" + self.response_headers(self._rid(req), route.deployment)
                return Reply("response", build_response(400, head, self.content_filter_prompt()), status=400)
        if op == MODELS:
            data = [
                {"id": m, "object": "model", "created": self.created, "owned_by": "system"} for m in self.model_list()
            ]
            return self._json_reply(req, {"object": "list", "data": data}, None)
        if op == MODEL:
            name = route.deployment or ""
            if self.models is not None and name not in self.models:
                return self._error_reply(self.unknown_model(name), None)
            return self._json_reply(
                req, {"id": name, "object": "model", "created": self.created, "owned_by": "system"}, None
            )
        if model is None:
            raise BadRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
        reported = model
        if self.models is not None:
            if model not in self.models:
                return self._error_reply(self.unknown_model(model), route.deployment)
            reported = self.models[model]
        deployment = model if self.kind == "azure" else None
        if op == EMBEDDINGS:
            reply = self._json_reply(
                req, render_embeddings(body, reported, self.config.embedding_dimensions), deployment
            )
            if fault is None:
                self._remember(req, model, False, reply.payload)
            return reply
        if op == RESPONSES:
            return self._responses(req, body, reported, model, deployment, fault)
        plan = plan_chat(body, sim_name=self.name, model=reported, key=req.url + b"\x00" + req.body, fault=fault)
        if body.get("stream") is True:
            reply = Reply("stream", plan=plan, headers=self._sse_headers(req, deployment))
            if fault is None and req.http_11:
                # No knob asks for pacing: send the whole stream in one write (and cache it),
                # so streaming benchmarks measure the gateway, not this simulator.
                reply = Reply("response", self._whole_stream(reply))
                self._remember(req, model, True, reply.payload)
            return reply
        out = render_completion(plan, self.created, self.fingerprint, self.completion_extra(plan, fault))
        self.decorate_completion(out, plan, fault)
        reply = self._json_reply(req, out, deployment)
        if fault is None:
            self._remember(req, model, False, reply.payload)
        return reply

    def _responses(
        self, req: Request, body: dict[str, Any], reported: str, model: str, deployment: str | None, fault: Fault | None
    ) -> Reply:
        """`POST /v1/responses`: the chat planner's reply as a Response or its event stream."""
        plan = plan_chat(
            chat_body(body), sim_name=self.name, model=reported, key=req.url + b"\x00" + req.body, fault=fault
        )
        if body.get("stream") is True:
            reply = Reply(
                "stream",
                plan=plan,
                headers=self._sse_headers(req, deployment),
                events=response_events(plan, body, self.created),
            )
            if fault is None and req.http_11:
                reply = Reply("response", self._whole_stream(reply))
                self._remember(req, model, True, reply.payload)
            return reply
        reply = self._json_reply(req, render_response(plan, body, self.created), deployment)
        if fault is None:
            self._remember(req, model, False, reply.payload)
        return reply

    # -- building replies ------------------------------------------------------------------
    @staticmethod
    def _rid(req: Request) -> str:
        return "req_" + short_hash(req.url, req.body, size=16)

    def _json_reply(self, req: Request, obj: Any, deployment: str | None) -> Reply:
        head = b"content-type: application/json\r\n" + self.response_headers(self._rid(req), deployment)
        return Reply("response", build_response(200, head, _encode(obj)))

    def _sse_headers(self, req: Request, deployment: str | None) -> bytes:
        return b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n" + self.response_headers(
            self._rid(req), deployment
        )

    def _error_reply(self, err: ErrorSpec, deployment: str | None, extra_headers: bytes = b"") -> Reply:
        head = (
            b"content-type: application/json\r\n"
            + self.response_headers("req_" + short_hash(err.message, str(err.status), size=16), deployment)
            + extra_headers
        )
        return Reply("response", build_response(err.status, head, _encode(self.error_payload(err))), status=err.status)

    def _whole_stream(self, reply: Reply) -> bytes:
        parts = [status_line(200), reply.headers, b"transfer-encoding: chunked\r\n\r\n"]
        parts += [frame(data) for _, data in self._frames(reply, None)]
        end = self._stream_end(reply)
        parts.append((frame(end) if end else b"") + b"0\r\n\r\n")
        return b"".join(parts)

    def _remember(self, req: Request, model: str | None, stream: bool, payload: bytes) -> None:
        cache = self._cache
        if len(cache) >= self.config.cache_size:
            cache.clear()  # crude but O(1) on the hot path; benchmarks repeat a few bodies
        cache[(req.url, req.body)] = (model, stream, payload)

    # -- sending ---------------------------------------------------------------------------
    def _send_error(self, conn: Connection, req: Request, entry: LogEntry, err: ErrorSpec) -> None:
        self._deliver(conn, req, entry, self._error_reply(err, None))
        return None

    def _deliver(self, conn: Connection, req: Request, entry: LogEntry, reply: Reply) -> None:
        st = self.state.stats
        if reply.kind == "cut":
            entry.outcome = "cut"
            st.cut += 1
            conn.abort()
            return
        if reply.status >= 400:
            entry.outcome = f"error:{reply.status}"
            st.errors += 1
        else:
            entry.outcome = "ok"
            st.completed += 1
        if req.keep_alive:
            conn.write(reply.payload)
        else:
            conn.write(with_close(reply.payload))
            conn.finish(False)

    async def _later(
        self, conn: Connection, req: Request, entry: LogEntry, reply: Reply, fault: Fault | None, delay: float
    ) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            if reply.kind == "hang":
                await asyncio.get_running_loop().create_future()  # until the client gives up
            elif reply.kind == "stream":
                await self._stream(conn, req, entry, reply, fault)
            else:
                self._deliver(conn, req, entry, reply)
        except asyncio.CancelledError:
            # The connection went away (or the simulator is closing) before we finished.
            if entry.outcome == "pending":
                entry.outcome = "cancelled"
                self.state.stats.cancelled += 1
        except Exception:
            log.exception("simulator failed while answering %s", entry.path)
            entry.outcome = "error:500"
            self.state.stats.errors += 1
            conn.abort()  # the response may be half written: never leave the client waiting

    # -- stream framing hooks: each kind says how its events look on the wire ---------------
    stream_end = b"data: [DONE]\n\n"  # what closes a complete stream (OpenAI's sentinel)

    def _frames(self, reply: Reply, fault: Fault | None) -> Iterator[tuple[bool, bytes]]:
        if reply.events is None:
            return self.stream_frames(reply, fault)
        # Responses API events name themselves on an `event:` line; the stream has no sentinel.
        return ((c, b"event: %s\ndata: %s\n\n" % (e["type"].encode(), _encode(e))) for c, e in reply.events)

    def _stream_end(self, reply: Reply) -> bytes:
        return self.stream_end if reply.events is None else b""

    def stream_frames(self, reply: Reply, fault: Fault | None) -> Iterator[tuple[bool, bytes]]:
        """(is_content, wire bytes) per event; content events are what cut_after counts."""
        for stage, _, chunk in self.stream_events(reply.stream_plan(), fault):
            yield stage == CONTENT, b"data: " + _encode(chunk) + b"\n\n"

    def malformed_frame(self, good: bytes) -> bytes:
        """What goes out at position `malformed_at`: by default a broken event before the good one."""
        return b"data: {not json\n\n" + good

    async def _stream(self, conn: Connection, req: Request, entry: LogEntry, reply: Reply, fault: Fault | None) -> None:
        st = self.state.stats
        chunked = req.http_11  # HTTP/1.0 clients get a close-delimited body instead
        wrap = frame if chunked else (lambda b: b)
        framing = b"transfer-encoding: chunked\r\n" if chunked else b""
        if not (chunked and req.keep_alive):
            framing += b"connection: close\r\n"
        conn.write(status_line(200) + reply.headers + framing + b"\r\n")
        st.open_streams += 1
        try:
            delay = fault.chunk_delay_ms / 1000 if fault else 0
            cut_after = fault.cut_after if fault else None
            bad_at = fault.malformed_at if fault else None
            events = 0
            content = 0
            sleep = asyncio.sleep
            for is_content, data in self._frames(reply, fault):
                if is_content:
                    if cut_after is not None and content >= cut_after:
                        break
                    content += 1
                events += 1
                conn.write(wrap(self.malformed_frame(data) if events == bad_at else data))
                if conn.closed:
                    raise asyncio.CancelledError
                if delay:
                    await sleep(delay)
                elif conn.write_paused:
                    await conn.drain()
            if cut_after is not None:
                entry.outcome = "cut"
                st.cut += 1
                conn.abort()
                return
            tail = self.malformed_frame(b"") if bad_at is not None and bad_at > events else b""
            tail += self._stream_end(reply)
            conn.write((wrap(tail) if tail else b"") + (b"0\r\n\r\n" if chunked else b""))
            entry.outcome = "ok"
            st.completed += 1
            conn.finish(req.keep_alive and chunked)
        finally:
            st.open_streams -= 1
