"""The MCP client: one registered server over streamable HTTP, with the official `mcp` SDK.

    async with connect(endpoint, limits) as session:     # initialize (protocol 2025-11-25)
        tools = await session.list_tools()               # every page (nextCursor followed)
        out = await session.call_tool("add", {"a": 1})   # ToolOutput(output, is_error)

What it promises:
- The endpoint's headers (opened from the registry, in memory only) go on every request; redirects
  are never followed (the admin registered this URL, not wherever it points to: `max_redirects=0`).
- Every wait is bounded: connecting and initializing (`connect_timeout_s`), listing, all of its pages
  together (`list_timeout_s`), each tool call (`call_timeout_s`, or the call's own if shorter). The body of
  each answer is bounded by `max_result_bytes` while it is read, so a server cannot make the gateway buffer
  without limit; answers are asked for and taken only uncompressed (`Accept-Encoding: identity`), since a
  compressed body is bounded only before it is inflated (1 MiB of gzip is 1 GiB of text). A listing holds at
  most `max_listed_tools` tools in at most `max_result_bytes` of JSON (what a stored `mcp_list_tools` item
  may hold when a client sends it back).
- The server's own stream (the GET without Last-Event-ID: its requests and notifications, none of
  which the gateway uses) is never opened; `_Watch` answers it 405 itself. Resuming answers (GET with
  Last-Event-ID) stops after `max_resumptions` in a session. The session's end (DELETE) is awaited
  `_END_S`, its body unread.
- The endpoint's header values never come back out: a server that echoes one (in a result, an error, a
  tool's description or a redirect) has it replaced by `[redacted]` before anything is returned, and in
  the SDK's and its HTTP stack's log records (`_ScrubLog`).
- Failures are `McpFailure`s (an `ApiError`, 424 in OpenAI's envelope, naming the server), never an
  exception a caller did not expect: `McpUnreachable` (cannot connect, refused the request, answered
  an HTTP error or a redirect, did not initialize in time), `McpProtocolError` (a JSON-RPC error or
  an answer that is not MCP), `McpToolTimeout`, `McpResultTooLarge`. A tool that fails is not one of
  these: its `isError` result is a `ToolOutput` with `is_error`, for the model to read and correct.
- Results map as the reference says: JSON of `structuredContent` when present, else the text blocks
  joined; other blocks (images, audio, resources) as short placeholders naming what they were.
"""

from __future__ import annotations

import json
import logging
import traceback
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import httpx2
import msgspec
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, PaginatedRequestParams
from pydantic import ValidationError

from .. import __version__
from ..schema.errors import ApiError
from .dial import guarded_transport
from .egress import EgressPolicy
from .model import ERROR_MARKER, McpEndpoint, McpTool

_MAX_PAGES = 100  # tools/list pages followed at most: a server cannot keep a listing going forever
REDACTED = "[redacted]"
# Header values shorter than this are not secrets worth the name (`X-Region: eu`), and replacing them
# everywhere in a result would mangle it.
_MIN_SECRET = 8
# How long a closed answer's end is awaited to keep its connection (_Bounded.aclose). The caller has
# its result by then (the SDK's request task drains, not the caller). Short: against a server that
# keeps its answers open, each drain holds one of the pool's 10 connections that long.
_DRAIN_S = 0.1
_END_S = 5.0  # how long the answer to a session's end (DELETE) is awaited: nobody needs it


@dataclass(frozen=True)
class McpLimits:
    connect_timeout_s: float = 10.0
    list_timeout_s: float = 30.0
    call_timeout_s: float = 60.0
    max_result_bytes: int = 1 << 20
    # Tools one server may list: the chat request a step is translated into holds at most 1,000 tools
    # (schema/bounds.py MAX_TOOLS_OTHER), and a listing of more is no tool list a model can choose from.
    max_listed_tools: int = 1_000
    # Answers resumed (GET with Last-Event-ID, after the server ended an answer's stream early) per session.
    # Well under the recursion limit: the SDK resumes a resumed answer by recursing, and about 1,000 in a row
    # broke the session with a RuntimeError from a cancel scope left in the wrong task.
    max_resumptions: int = 100
    egress: EgressPolicy = EgressPolicy()  # public addresses only (config: `egress:`)


class ToolOutput(msgspec.Struct, frozen=True):
    output: str  # structuredContent as JSON, or the text blocks joined
    is_error: bool = False

    @property
    def function_output(self) -> str:
        """The output as a `function_call_output` for a model: marked when the tool failed."""
        return ERROR_MARKER + self.output if self.is_error else self.output


class McpFailure(ApiError):
    """A server that could not be used for this request; 424 (Failed Dependency), as OpenAI answers."""

    code = "mcp_error"

    def __init__(self, server: str, message: str) -> None:
        super().__init__(424, f"MCP server {server}: {message}", type="external_connector_error", code=self.code)
        self.server = server

    def scrubbed(self, secrets: Secrets) -> McpFailure:
        """This failure with the endpoint's header values taken out of its message (a server's error text,
        a redirect's location: what a server chose to say)."""
        message = secrets.scrub(self.body.message)
        if message != self.body.message:
            self.body = msgspec.structs.replace(self.body, message=message)
            self.args = (message,)
        return self


class McpUnreachable(McpFailure):
    code = "mcp_server_unreachable"


class McpEgressDenied(McpFailure):
    """The server's address is not one the organisation's egress rules allow: nothing was sent to it."""

    code = "mcp_egress_denied"

    def __init__(self, server: str, message: str) -> None:
        super().__init__(server, message)
        self.status = 403


class McpProtocolError(McpFailure):
    code = "mcp_protocol_error"


class McpToolTimeout(McpFailure):
    code = "mcp_tool_timeout"


class McpResultTooLarge(McpFailure):
    code = "mcp_result_too_large"


class _TooLarge(httpx2.StreamError):
    """Raised while a body is read past the bound: the SDK turns it into an error for that request."""


class _Encoded(httpx2.StreamError):
    """Raised at the first read of a compressed answer: the SDK turns it into an error for that request."""


class Secrets:
    """The values of an endpoint's headers (its credentials), to take out of whatever the server says."""

    open: ClassVar[weakref.WeakSet[Secrets]] = weakref.WeakSet()  # those of the sessions open now (_ScrubLog)

    def __init__(self, headers: Any) -> None:
        found: set[str] = set()
        for value in headers.values():
            value = str(value).strip()
            found.add(value)
            _scheme, _, credential = value.partition(" ")  # `Bearer <token>`: the token echoed alone
            found.add(credential.strip())
        # Longest first: a token inside a longer value is replaced as part of the value.
        self.values = sorted((v for v in found if len(v) >= _MIN_SECRET), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    @classmethod
    def scrub_all(cls, text: str) -> str:
        for secrets in list(cls.open):
            text = secrets.scrub(text)
        return text

    def tool(self, tool: McpTool) -> McpTool:
        if not self.values:
            return tool
        raw = msgspec.json.encode(tool).decode()
        clean = self.scrub(raw)
        if clean == raw:
            return tool
        try:
            return msgspec.json.decode(clean, type=McpTool)
        except msgspec.ValidationError:  # the value was the tool's name or a schema's key: nothing of it is kept
            return McpTool(name=self.scrub(tool.name), input_schema={"type": "object", "properties": {}})


class _ScrubLog(logging.Filter):
    """On the SDK's and its HTTP stack's loggers: what a server said (a redirect's location, an answer that
    did not parse, response headers at debug level) is logged there, and may echo a credential it was sent.
    A record holding an open session's header value has it replaced; the others pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not Secrets.open:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted: the handler reports it, as without this filter
            return True
        moved = False
        if record.exc_info and record.exc_info[1] is not None:
            trace = "".join(traceback.format_exception(record.exc_info[1]))
            if Secrets.scrub_all(trace) != trace:  # the trace goes into the message, scrubbed
                message, record.exc_info, record.exc_text, moved = f"{message}\n{trace}", None, None, True
        clean = Secrets.scrub_all(message)
        if moved or clean != message:
            record.msg, record.args = clean, None
        return True


_SCRUB = _ScrubLog()
for _name in list(logging.root.manager.loggerDict):  # every logger of the SDK and its HTTP stack, imported above
    if _name.split(".", 1)[0] in ("mcp", "mcp_types", "httpx2", "httpcore2"):
        logging.getLogger(_name).addFilter(_SCRUB)


class _Watch(httpx2.AsyncBaseTransport):
    """The HTTP transport under the SDK: bounds each answer's body as it is read and remembers
    what went wrong at the HTTP level (an error status, a redirect), so a failure can say it."""

    def __init__(self, max_bytes: int, egress: EgressPolicy, max_resumptions: int = 100, tenant: str = "") -> None:
        self._inner, self.guard = guarded_transport(egress, tenant)
        self.max_bytes = max_bytes
        self.resumptions_left = max_resumptions
        self.status: int | None = None
        self.redirect: str | None = None
        self.too_large = False
        self.encoded: str | None = None  # the Content-Encoding of an answer refused for it

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and "last-event-id" not in request.headers:
            # The server's own stream (what it starts: requests to the client, notifications), which the
            # gateway uses none of, is never opened: answered here as a server without one answers. A server
            # that ended it with `retry: 0` had the SDK reconnect at once, for as long as the run held the
            # session. A GET with Last-Event-ID resumes an answer (a tool call's), and is one (bounded below).
            return httpx2.Response(405, request=request)
        if request.method == "DELETE":
            return await self._end(request)
        if request.method == "GET":
            # A server that ends each resumed answer with a new event id and `retry: 0` had the SDK resume it at
            # once, for ever: the loop outlives the call's timeout (it is not the caller's task), so it ran for
            # as long as the run held the session. Past the session's allowance, resuming fails here (the
            # SDK gives up after two more tries).
            self.resumptions_left -= 1
            if self.resumptions_left < 0:
                return httpx2.Response(405, request=request)
        response = await self._inner.handle_async_request(request)
        if 300 <= response.status_code < 400:
            self.redirect = response.headers.get("location", "")
        elif response.status_code >= 400 and request.method == "POST":
            # Not a GET's: a server without its own stream answers it 405 (as the spec allows), and that
            # status made every later JSON-RPC error of the session read "answered HTTP 405".
            self.status = response.status_code
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            # httpx would inflate it after the bound counted its compressed bytes: refused, never inflated.
            self.encoded = encoding[:64]
            response.stream = _Bounded(response.stream, self, refuse=True)
        else:  # an answer, or its resumption: bounded as it is read
            response.stream = _Bounded(response.stream, self)
        return response

    async def _end(self, request: httpx2.Request) -> httpx2.Response:
        """The session's end (the SDK's DELETE): its status within _END_S, its body never read (the SDK read
        it whole, and a server that dripped it held the session's closing for as long as it liked)."""
        with anyio.move_on_after(_END_S):
            response = await self._inner.handle_async_request(request)
            await response.aclose()
            return httpx2.Response(response.status_code, request=request)
        raise httpx2.ReadTimeout(f"the session's end was not answered within {_END_S:g} s", request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Bounded(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, watch: _Watch, *, refuse: bool = False) -> None:
        self._inner, self._watch, self._seen = inner, watch, 0
        self._chunks: AsyncIterator[bytes] = inner.__aiter__()
        self._ended = False
        self._refuse = refuse

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._next()) is not None:
            yield chunk

    async def _next(self) -> bytes | None:
        if self._refuse:
            raise _Encoded(f"the answer is compressed ({self._watch.encoded}), which was not asked for")
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._ended = True
            return None
        self._seen += len(chunk)
        if self._seen > self._watch.max_bytes:
            self._watch.too_large = True
            raise _TooLarge(f"the answer is larger than {self._watch.max_bytes} bytes")
        return chunk

    async def aclose(self) -> None:
        # The SDK closes an SSE answer as soon as its result event is in, before the stream's end:
        # httpcore then drops the connection, and every call of a session paid a new TCP (and TLS)
        # connection. The server ends the stream right after the result (the spec's SHOULD), so its
        # end is read here, within the size bound and _DRAIN_S, and the connection is kept.
        try:
            if not self._ended and not self._watch.too_large and not self._refuse:
                # Not drained in time, too large (_TooLarge is a StreamError), broken: closed as before, the
                # connection with it; closed whatever the drain raised (a cancellation).
                with anyio.move_on_after(_DRAIN_S), suppress(httpx2.StreamError, httpx2.TransportError):
                    while await self._next() is not None:
                        pass
        finally:
            await self._inner.aclose()


class McpSession:
    """One initialized session with one server."""

    def __init__(
        self, endpoint: McpEndpoint, session: ClientSession, watch: _Watch, limits: McpLimits, secrets: Secrets
    ) -> None:
        self.endpoint = endpoint
        self._session = session
        self._watch = watch
        self._limits = limits
        self._secrets = secrets

    async def list_tools(self) -> list[McpTool]:
        """Every page of the server's tool list, within `list_timeout_s` in all (each page used to have it
        whole: 100 pages dripped at 29 s each held a run 48 minutes), `max_listed_tools` tools and
        `max_result_bytes` of JSON."""
        limits, name = self._limits, self.endpoint.name
        tools: list[McpTool] = []
        size = 0
        cursor: str | None = None
        deadline = anyio.current_time() + limits.list_timeout_s
        for _ in range(_MAX_PAGES):
            left = deadline - anyio.current_time()
            if left <= 0:
                raise McpToolTimeout(name, f"its tool list was not complete within {limits.list_timeout_s:g} s")
            params = PaginatedRequestParams(cursor=cursor) if cursor is not None else None
            page = await self._request(
                self._session.send_request(types.ListToolsRequest(params=params), types.ListToolsResult, left),
                "listing its tools",
                limits.list_timeout_s,
            )
            for listed in page.tools:
                tool = self._secrets.tool(_tool(listed))
                size += len(msgspec.json.encode(tool))
                tools.append(tool)
            if len(tools) > limits.max_listed_tools:
                raise McpResultTooLarge(name, f"it lists more than {limits.max_listed_tools} tools")
            if size > limits.max_result_bytes:
                raise McpResultTooLarge(name, f"its tool list is larger than {limits.max_result_bytes} bytes")
            cursor = page.next_cursor
            if cursor is None:
                return tools
        raise McpProtocolError(name, f"its tool list did not end after {_MAX_PAGES} pages")

    async def call_tool(
        self, name: str, arguments: dict[str, Any], timeout_s: float | None = None, meta: dict[str, Any] | None = None
    ) -> ToolOutput:
        # At most the limit: the HTTP read timeout under the SDK is set from it when the session opens.
        limit = self._limits.call_timeout_s
        timeout = min(timeout_s, limit) if timeout_s is not None else limit
        pending = self._session.call_tool(name, arguments, read_timeout_seconds=timeout, meta=meta)  # type: ignore[arg-type]
        result = await self._request(pending, f"calling tool {name}", timeout)
        out = tool_output(result)
        clean = self._secrets.scrub(out.output)
        return out if clean == out.output else ToolOutput(clean, out.is_error)

    async def _request(self, pending: Any, doing: str, timeout: float | None = None) -> Any:
        try:
            return await pending
        except MCPError as exc:
            raise _classified(self.endpoint.name, exc, self._watch, doing, timeout).scrubbed(self._secrets) from None
        except ValidationError:
            raise McpProtocolError(self.endpoint.name, f"{doing}: its answer is not a valid MCP result") from None


@asynccontextmanager
async def connect(endpoint: McpEndpoint, limits: McpLimits | None = None) -> AsyncIterator[McpSession]:
    """An initialized session with the server; closed (its MCP session ended) when the block ends."""
    limits = limits or McpLimits()
    watch = _Watch(limits.max_result_bytes, limits.egress, limits.max_resumptions, endpoint.tenant)
    secrets = Secrets(endpoint.headers)
    Secrets.open.add(secrets)  # until the session is gone (a weak reference: nothing to undo)
    timeout = httpx2.Timeout(limits.connect_timeout_s, read=max(limits.call_timeout_s, limits.list_timeout_s) + 5)
    # Uncompressed answers only (_Watch refuses the rest); Accept-Encoding cannot be registered (spec.py).
    headers = {**endpoint.headers, "Accept-Encoding": "identity"}
    client = httpx2.AsyncClient(
        transport=watch, headers=headers, timeout=timeout, max_redirects=0, follow_redirects=False
    )
    info = types.Implementation(name="multihome", version=__version__)
    try:
        async with (
            client,
            streamable_http_client(
                endpoint.url, http_client=client, max_sse_event_size=limits.max_result_bytes
            ) as streams,
            ClientSession(*streams, client_info=info, read_timeout_seconds=limits.connect_timeout_s) as session,
        ):
            try:
                await session.initialize()
            except MCPError as exc:
                raise _classified(endpoint.name, exc, watch, "initializing", None, connecting=True) from None
            except (ValidationError, RuntimeError) as exc:  # RuntimeError: a protocol version it does not speak
                raise McpProtocolError(endpoint.name, f"initializing: {_short(exc)}") from None
            yield McpSession(endpoint, session, watch, limits, secrets)
    except McpFailure as failure:
        raise failure.scrubbed(secrets) from None
    except BaseExceptionGroup as group:  # the SDK's task groups wrap what was raised inside them
        found = _denied(endpoint.name, watch) or _unwrapped(endpoint.name, group)
        raise (found.scrubbed(secrets) if isinstance(found, McpFailure) else found) from None
    except httpx2.TransportError as exc:
        raise (_denied(endpoint.name, watch) or _unreachable(endpoint.name, exc)).scrubbed(secrets) from None


def _denied(server: str, watch: _Watch) -> McpEgressDenied | None:
    return McpEgressDenied(server, watch.guard.denied) if watch.guard.denied else None


def _unwrapped(server: str, group: BaseExceptionGroup[Any]) -> BaseException:
    leaves = list(_leaves(group))
    for leaf in leaves:
        if isinstance(leaf, McpFailure):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, httpx2.TransportError):
            return _unreachable(server, leaf)
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            return McpProtocolError(server, leaf.message)
    return leaves[0] if leaves else group  # not the SDK's doing (the caller's own error): as it was


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _unreachable(server: str, exc: httpx2.TransportError) -> McpUnreachable:
    if isinstance(exc, httpx2.TimeoutException):
        return McpUnreachable(server, "did not answer in time")
    return McpUnreachable(server, f"cannot be reached ({type(exc).__name__}: {_short(exc)})")


def _classified(
    server: str, exc: MCPError, watch: _Watch, doing: str, timeout: float | None, *, connecting: bool = False
) -> McpFailure:
    if (denied := _denied(server, watch)) is not None:
        return denied
    if watch.too_large:
        return McpResultTooLarge(server, f"{doing}: the answer is larger than {watch.max_bytes} bytes")
    if watch.encoded is not None:
        return McpProtocolError(
            server,
            f"{doing}: it answered compressed (Content-Encoding {watch.encoded}) though asked for identity; "
            "Multihome takes only uncompressed answers, whose size it bounds while they are read",
        )
    if watch.redirect is not None:
        return McpUnreachable(
            server,
            f"answered with a redirect (to {watch.redirect[:200]}), which Multihome does not follow; "
            "register the URL it should be reached at",
        )
    if watch.status is not None:
        return McpUnreachable(server, f"{doing}: answered HTTP {watch.status}" + _hint(watch.status))
    if exc.code == REQUEST_TIMEOUT:
        if connecting:
            return McpUnreachable(server, "did not complete the MCP handshake in time")
        return McpToolTimeout(server, f"{doing}: no answer within {timeout:g} s" if timeout else doing)
    if exc.code == CONNECTION_CLOSED and exc.message.startswith(_CUT_OFF):  # the SDK's words, not the server's
        return McpUnreachable(server, f"{doing}: the connection closed before it answered")
    return McpProtocolError(server, f"{doing}: {exc.message[:300]} (JSON-RPC error {exc.code})")


# What the SDK says (as a JSON-RPC error of its own, CONNECTION_CLOSED) of an answer cut off: the server died or
# dropped the connection mid-call. A server's own -32000 error is its protocol error, whatever it says.
_CUT_OFF = ("SSE stream ended without a response", "SSE stream failed", "Connection closed")


def _hint(status: int) -> str:
    if status in (401, 403):
        return " (it refused the credentials: check the headers registered for it)"
    if status == 404:
        return " (no MCP endpoint at the registered URL, or the session expired)"
    return ""


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]


def _tool(t: types.Tool) -> McpTool:
    annotations = t.annotations.model_dump(by_alias=True, exclude_none=True) if t.annotations is not None else None
    return McpTool(name=t.name, input_schema=dict(t.input_schema), description=t.description, annotations=annotations)


def tool_output(result: types.CallToolResult) -> ToolOutput:
    """A tools/call result as one string: JSON of structuredContent, else the blocks' text joined."""
    if result.structured_content is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False, separators=(",", ":"))
    else:
        text = "\n".join(_block_text(block) for block in result.content)
    return ToolOutput(text, bool(result.is_error))


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes]"
    if kind == "resource_link":
        return f"[resource {block.uri}" + (f" ({block.name})" if block.name else "") + "]"
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        return str(text) if text is not None else f"[resource {resource.uri}, binary]"
    return f"[{kind or 'unknown'} content]"
