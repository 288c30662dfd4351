"""The MCP client against servers that misbehave after a good handshake: one that never answers a tool call
(not even its headers), one that streams keep-alives for ever, one that streams notifications for ever, one
that closes in the middle of an event, one that answers text that is not JSON, one whose one SSE line never
ends, and one that closes after an event with an id and cannot be reconnected to (the SDK resumes with
Last-Event-ID). Each call ends, within a bound, as a 424 naming the server; none hangs (docs/agents.md
"Calling a server"). Also the handshake itself hanging, and a listing that never ends.

The server is a few lines of raw HTTP/1.1 on the test's own loop: the SDK's server would not misbehave."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any

import pytest

from multihome.tools.egress import EgressPolicy
from multihome.tools.mcp_client import McpFailure, McpLimits, connect
from multihome.tools.model import McpEndpoint

from .raw_server import RawServer

pytestmark = pytest.mark.anyio
LIMITS = McpLimits(connect_timeout_s=2.0, list_timeout_s=2.0, call_timeout_s=2.0, egress=EgressPolicy(["127.0.0.0/8"]))
BOUND_S = 30.0  # far above every limit: what is asserted is that the call ends, not how fast


class Hostile(RawServer):
    """Answers the MCP handshake properly, then `tools/call` (and `tools/list` when `on_list`) the way `mode` says."""

    def __init__(self, mode: str, *, on_list: bool = False, on_initialize: bool = False) -> None:
        super().__init__()
        self.mode, self.on_list, self.on_initialize = mode, on_list, on_initialize

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method = head.split(b" ", 1)[0]
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = json.loads(await reader.readexactly(length)) if length else None
                if not await self._answer(method, body, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: bytes, body: dict | None, writer: asyncio.StreamWriter) -> bool:
        """Whether the connection may serve another request."""
        if method != b"POST" or body is None:  # no GET stream; DELETE ends the session
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return True
        if "id" not in body:  # a notification
            writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return True
        kind = body["method"]
        hostile = (
            (kind == "tools/call")
            or (kind == "tools/list" and self.on_list)
            or (kind == "initialize" and self.on_initialize)
        )
        if not hostile:
            if kind == "initialize":
                result = {
                    "protocolVersion": body["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "hostile", "version": "1"},
                }
            else:
                tool = {"name": "echo", "inputSchema": {"type": "object"}}
                result = {"tools": [tool]}
            data = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: s1\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(data), data)
            )
            await writer.drain()
            return True
        await self._misbehave(body["id"], writer)
        return False

    async def _misbehave(self, request_id: int, writer: asyncio.StreamWriter) -> None:
        sse = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        if self.mode == "silent":  # not even the headers
            await asyncio.sleep(3600)
        elif self.mode == "keepalive":
            writer.write(sse)
            while True:
                writer.write(b": still here\n\n")
                await writer.drain()
                await asyncio.sleep(0.05)
        elif self.mode == "notifications":
            writer.write(sse)
            n = 0
            while True:
                n += 1
                note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": n}}
                writer.write(b"data: " + json.dumps(note).encode() + b"\n\n")
                await writer.drain()
                await asyncio.sleep(0.05)
        elif self.mode == "half_event":
            writer.write(sse + b'data: {"jsonrpc": "2.0", "id": ' + str(request_id).encode())
            await writer.drain()
        elif self.mode == "garbage":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\nnot json!")
            await writer.drain()
        elif self.mode == "endless_line":
            writer.write(sse + b"data: ")
            while True:
                writer.write(b"x" * 65536)
                await writer.drain()
        elif self.mode == "resumable_then_gone":
            note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": 1}}
            writer.write(sse + b"id: e1\ndata: " + json.dumps(note).encode() + b"\n\n")
            await writer.drain()
        else:
            raise AssertionError(self.mode)


async def _within_bound(work: Coroutine[Any, Any, None]) -> None:
    await asyncio.wait_for(work, BOUND_S)


async def _call(url: str) -> None:
    async with connect(McpEndpoint("hostile", url), LIMITS) as session:
        assert [t.name for t in await session.list_tools()] == ["echo"]
        await session.call_tool("echo", {"text": "hi"})


@pytest.mark.parametrize(
    "mode", ["silent", "keepalive", "notifications", "half_event", "garbage", "endless_line", "resumable_then_gone"]
)
async def test_a_tool_call_a_server_mishandles_ends_as_a_424_naming_it(mode):
    async with Hostile(mode) as server:
        with pytest.raises(McpFailure) as caught:
            await _within_bound(_call(server.url))
    assert caught.value.status == 424 and "MCP server hostile" in caught.value.body.message, caught.value.body


@pytest.mark.parametrize("mode", ["silent", "keepalive", "endless_line"])
async def test_a_listing_a_server_mishandles_ends_as_a_424(mode):
    async with Hostile(mode, on_list=True) as server:
        with pytest.raises(McpFailure) as caught:
            await _within_bound(_call(server.url))
    assert caught.value.status == 424, caught.value.body


@pytest.mark.parametrize("mode", ["silent", "keepalive", "half_event"])
async def test_a_handshake_a_server_mishandles_ends_as_a_424(mode):
    async with Hostile(mode, on_initialize=True) as server:
        with pytest.raises(McpFailure) as caught:
            await _within_bound(_call(server.url))
    assert caught.value.status == 424, caught.value.body
