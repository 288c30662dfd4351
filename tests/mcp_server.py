"""A real MCP server for tests, built with the official `mcp` SDK's server API (`MCPServer`) and served
over streamable HTTP by uvicorn on 127.0.0.1 in a thread of the test process.

    with McpTestServer() as srv:          # started; stopped (and its thread joined) at the end
        srv.url                           # http://127.0.0.1:<port>/mcp
        srv.calls                         # [("record", {"note": ...}), ...]: the side effects, in order
        srv.requests                      # the headers of every HTTP request it received (lower-case names)

Tools: `add` (pure, structured output, read-only), `echo` (pure), `record` (a side effect: appends to
`calls`, and to `call_log` if given, one JSON line per call, for tests that kill a process; a call
whose idempotency key (`_meta`) was seen before answers as before, without a second effect, and is
logged as a repeat), `fail` (a tool error: an `isError` result), `slow` (sleeps; logged when it starts), `big` (a long text), `weather.get-current` (a name
an OpenAI function cannot have). `page_size` pages `tools/list` (`nextCursor`); `require_header` makes
every request without that header (name, value) a 401; `/redirect` answers 307 to `/mcp`.
Reused by the Responses integration tests (issue 16). `McpServerProcess` runs one in a process of its own,
for tests in which the server dies (SIGKILL) mid-call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ListToolsResult, PaginatedRequestParams, ToolAnnotations

from multihome.tools.model import IDEMPOTENCY_META
from ports import free_port


class _PagedServer(MCPServer):
    """MCPServer answers `tools/list` in one page; this one pages it, so a client must follow `nextCursor`."""

    page_size: int | None = None

    async def _handle_list_tools(self, ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
        tools = await self.list_tools()
        if not self.page_size:
            return ListToolsResult(tools=tools)
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + self.page_size
        return ListToolsResult(tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None)


def build_server(calls: list[tuple[str, dict[str, Any]]], call_log: Path | None = None) -> _PagedServer:
    server = _PagedServer("multihome-test-tools", log_level="WARNING")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int) -> dict[str, int]:
        """Add two integers."""
        return {"sum": a + b}

    @server.tool()
    def echo(text: str) -> str:
        """Say the text back."""
        return text

    done: dict[str, str] = {}  # idempotency key -> the answer given: a repeated call has no second effect

    @server.tool()
    def record(note: str, ctx: Context) -> str:
        """Write a note down (a side effect, logged by the test server)."""
        meta = ctx.request_context.meta or {}
        key = meta.get(IDEMPOTENCY_META)
        if key is not None and key in done:
            log(call_log, {"tool": "record", "note": note, "key": key, "repeat": True})
            return done[key]
        calls.append(("record", {"note": note}))
        log(call_log, {"tool": "record", "note": note, "key": key})
        answer = done[key] = f"recorded {note}"
        return answer

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails, with the reason given."""
        raise ToolError(f"failed on purpose: {reason}")

    @server.tool()
    async def slow(seconds: float, ctx: Context) -> str:
        """Sleep, then answer."""
        import anyio

        log(call_log, {"tool": "slow", "key": (ctx.request_context.meta or {}).get(IDEMPOTENCY_META)})
        await anyio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    def big(size: int) -> str:
        """A text of `size` characters."""
        return "x" * size

    @server.tool(name="weather.get-current")
    def weather(city: str) -> str:
        """The weather in a city (a tool name with a dot, as MCP allows)."""
        return f"sunny in {city}"

    return server


def log(call_log: Path | None, line: dict[str, Any]) -> None:
    if call_log is not None:
        with call_log.open("a") as f:
            f.write(json.dumps(line) + "\n")


class McpTestServer:
    def __init__(
        self,
        *,
        page_size: int | None = None,
        require_header: tuple[str, str] | None = None,
        call_log: Path | None = None,
        json_response: bool = False,
    ) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[dict[str, str]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._require = (require_header[0].lower().encode(), require_header[1].encode()) if require_header else None
        server = build_server(self.calls, call_log)
        server.page_size = page_size
        self._app = server.streamable_http_app(json_response=json_response, host="127.0.0.1")
        config = uvicorn.Config(
            self._asgi,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            interface="asgi3",
            timeout_graceful_shutdown=1,  # a client's open SSE stream must not hold a test's teardown for long
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, name="mcp-test-server", daemon=True)

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            self.requests.append({k.decode(): v.decode() for k, v in headers.items()})
            if scope["path"] == "/redirect":
                await _answer(send, 307, b"", [(b"location", b"/mcp")])
                return
            if self._require is not None and headers.get(self._require[0]) != self._require[1]:
                await _answer(send, 401, b'{"error": "unauthorized"}', [(b"content-type", b"application/json")])
                return
        await self._app(scope, receive, send)

    def start(self) -> McpTestServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=20)

    def __enter__(self) -> McpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class McpServerProcess:
    """An McpTestServer in a process of its own (`python tests/mcp_server.py PORT CALL_LOG`), which `kill` ends at once,
    mid-answer: a server that dies. `start` again (same port, same URL) brings it back."""

    def __init__(self, call_log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.call_log = call_log  # its calls, one JSON line each (a `slow` call when it starts)
        self.popen: subprocess.Popen[str] | None = None

    def start(self) -> McpServerProcess:
        self.popen = subprocess.Popen(
            [sys.executable, __file__, str(self.port), str(self.call_log)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()  # bounded: the child prints READY or exits
        if not line.startswith("READY"):
            self.kill()
            raise RuntimeError(f"the MCP server process did not start: {line!r}")
        return self

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def __enter__(self) -> McpServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


if __name__ == "__main__":  # McpServerProcess's child: serve on the port given until killed
    import ports

    ports.free_port = lambda: int(sys.argv[1])  # type: ignore[assignment]
    globals()["free_port"] = ports.free_port
    McpTestServer(call_log=Path(sys.argv[2])).start()
    print("READY", flush=True)
    while True:
        time.sleep(3600)
