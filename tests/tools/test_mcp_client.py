"""The MCP client against a real MCP server built with the SDK's server API (tests/mcp_server.py):
listing follows every page, calls map their results as the reference says, a failing tool is a
result (not an error), and everything that goes wrong otherwise is a 424 naming the server: a slow
tool past its timeout, an answer past the size bound, a closed port, refused credentials, a redirect
(never followed)."""

from __future__ import annotations

import anyio
import pytest
from mcp_types import CallToolResult, EmbeddedResource, ImageContent, TextContent, TextResourceContents

from mcp_server import McpServerProcess, McpTestServer, free_port
from multihome.tools import mcp_client
from multihome.tools.dial import GuardedBackend
from multihome.tools.egress import EgressPolicy
from multihome.tools.mcp_client import (
    ERROR_MARKER,
    McpFailure,
    McpLimits,
    McpResultTooLarge,
    McpToolTimeout,
    McpUnreachable,
    connect,
    tool_output,
)
from multihome.tools.model import McpEndpoint

pytestmark = pytest.mark.anyio
TOOLS = ["add", "echo", "record", "fail", "slow", "big", "weather.get-current"]
LOCAL = McpLimits(egress=EgressPolicy(["127.0.0.0/8"]))  # the test servers listen on loopback


async def test_lists_every_page_and_calls_tools(mcp_server):
    async with connect(McpEndpoint("tools", mcp_server.url), LOCAL) as session:
        tools = await session.list_tools()
        assert [t.name for t in tools] == TOOLS  # 3 + 3 + 1: every nextCursor followed
        add = tools[0]
        assert add.read_only and not tools[1].read_only
        assert add.input_schema["properties"].keys() == {"a", "b"} and add.description == "Add two integers."
        out = await session.call_tool("add", {"a": 2, "b": 3})
        assert (out.output, out.is_error) == ('{"sum":5}', False)  # structuredContent, as JSON
        before = len(mcp_server.calls)
        out = await session.call_tool("record", {"note": "n1"})
        assert not out.is_error and "recorded n1" in out.output
        assert mcp_server.calls[before:] == [("record", {"note": "n1"})]  # executed once
        out = await session.call_tool("weather.get-current", {"city": "Oslo"})
        assert "sunny in Oslo" in out.output


async def test_a_failing_tool_is_a_result_marked_as_an_error(mcp_server):
    async with connect(McpEndpoint("tools", mcp_server.url), LOCAL) as session:
        out = await session.call_tool("fail", {"reason": "bad input"})
        assert out.is_error and "failed on purpose: bad input" in out.output
        assert out.function_output.startswith(ERROR_MARKER)
        unknown = await session.call_tool("no-such-tool", {})
        assert unknown.is_error and "no-such-tool" in unknown.output
        assert not (await session.call_tool("echo", {"text": "x"})).is_error  # the session is still fine


async def test_a_slow_tool_times_out_and_the_session_goes_on(mcp_server):
    async with connect(McpEndpoint("tools", mcp_server.url), LOCAL) as session:
        with pytest.raises(McpToolTimeout) as caught:
            await session.call_tool("slow", {"seconds": 5}, timeout_s=0.3)
        assert caught.value.status == 424 and caught.value.body.code == "mcp_tool_timeout"
        assert "MCP server tools" in caught.value.body.message and "slow" in caught.value.body.message
        assert (await session.call_tool("echo", {"text": "after"})).output == '{"result":"after"}'


async def test_an_answer_past_the_bound_is_refused_while_it_is_read(mcp_server):
    with pytest.raises(McpResultTooLarge) as caught:
        async with connect(
            McpEndpoint("tools", mcp_server.url), McpLimits(max_result_bytes=20_000, egress=LOCAL.egress)
        ) as session:
            assert len((await session.call_tool("big", {"size": 1000})).output) > 1000
            await session.call_tool("big", {"size": 50_000})
    assert "20000 bytes" in caught.value.body.message


async def test_a_closed_port_is_unreachable_naming_the_server():
    with pytest.raises(McpUnreachable) as caught:
        async with connect(McpEndpoint("crm", f"http://127.0.0.1:{free_port()}/mcp"), LOCAL) as session:
            await session.list_tools()
    err = caught.value
    assert (
        err.status == 424 and err.body.code == "mcp_server_unreachable" and err.body.type == "external_connector_error"
    )
    assert err.body.message.startswith("MCP server crm: cannot be reached")


async def test_credentials_go_on_every_request_and_a_refusal_says_so():
    with McpTestServer(require_header=("x-api-key", "k-123")) as server:
        async with connect(McpEndpoint("guarded", server.url, {"X-Api-Key": "k-123"}), LOCAL) as session:
            assert len(await session.list_tools()) == len(TOOLS)
        assert server.requests and all(r.get("x-api-key") == "k-123" for r in server.requests)
        with pytest.raises(McpUnreachable) as caught:
            async with connect(McpEndpoint("guarded", server.url, {"X-Api-Key": "wrong"}), LOCAL):
                pass
        assert "HTTP 401" in caught.value.body.message and "credentials" in caught.value.body.message
        assert "wrong" not in caught.value.body.message


async def test_a_redirect_is_never_followed(mcp_server):
    seen = len(mcp_server.requests)
    with pytest.raises(McpUnreachable) as caught:
        async with connect(McpEndpoint("moved", mcp_server.url.replace("/mcp", "/redirect")), LOCAL):
            pass
    assert "redirect" in caught.value.body.message
    assert [r for r in mcp_server.requests[seen:]] and all(
        "mcp-session-id" not in r for r in mcp_server.requests[seen:]
    )
    assert len(mcp_server.requests) - seen == 1  # the redirect itself, and nothing at /mcp after it


async def test_the_callers_own_error_passes_through_unchanged(mcp_server):
    with pytest.raises(KeyError, match="mine"):
        async with connect(McpEndpoint("tools", mcp_server.url), LOCAL):
            raise KeyError("mine")


def test_results_map_as_the_reference_says():
    text = CallToolResult(content=[TextContent(type="text", text="a"), TextContent(type="text", text="b")])
    assert tool_output(text).output == "a\nb"
    structured = CallToolResult(content=[TextContent(type="text", text="{}")], structured_content={"k": [1, "é"]})
    assert tool_output(structured).output == '{"k":[1,"é"]}'
    mixed = CallToolResult(
        content=[
            ImageContent(type="image", data="aGVsbG8h", mime_type="image/png"),
            EmbeddedResource(
                type="resource", resource=TextResourceContents(uri="file:///n.txt", text="note", mime_type="text/plain")
            ),
        ],
        is_error=True,
    )
    out = tool_output(mixed)
    assert out.output == "[image image/png, 6 bytes]\nnote" and out.is_error
    assert out.function_output == ERROR_MARKER + out.output


def test_a_failure_is_an_api_error_in_openais_envelope():
    err = McpFailure("x", "went wrong")
    assert err.status == 424 and err.body.message == "MCP server x: went wrong"


async def test_a_session_keeps_its_connection_across_calls(mcp_server, monkeypatch):
    # The SDK closes each answer at its result event; the client reads the stream's end so the
    # connection is reused, not dialled again (and TLS not negotiated again) for every call.
    dials: list[int] = []
    real = GuardedBackend.connect_tcp

    async def counted(self, host, port, *args, **kwargs):
        dials.append(port)
        return await real(self, host, port, *args, **kwargs)

    async def answer_read_to_its_end(session):
        # The end is read in the SDK's request task, after the caller has its result: wait for it,
        # or the next call would rightly dial while the connection is still busy.
        pool = session._watch._inner._pool
        with anyio.fail_after(30):
            while not any(c.is_idle() for c in pool.connections):
                await anyio.sleep(0.01)

    monkeypatch.setattr(GuardedBackend, "connect_tcp", counted)
    monkeypatch.setattr(
        mcp_client, "_DRAIN_S", 30, raising=False
    )  # the mechanism, not how fast a loaded machine drains
    async with connect(McpEndpoint("tools", mcp_server.url), LOCAL) as session:
        await session.list_tools()
        await answer_read_to_its_end(session)
        after_setup = len(dials)
        for i in range(5):
            assert (await session.call_tool("echo", {"text": f"t{i}"})).output == f'{{"result":"t{i}"}}'
            await answer_read_to_its_end(session)
    # Five calls, not five more connections. One more was seen under load (1 run in ~15; not pinned
    # down: a second POST in flight beside a call would rightly need one); once pooled, it is reused too.
    assert len(dials) - after_setup <= 1, dials


async def test_a_server_that_dies_mid_call_is_unreachable_not_a_protocol_error(tmp_path):
    # The SDK ends a call whose stream closed unanswered with a JSON-RPC error of its own making (-32000,
    # "SSE stream ended without a response"), which was reported as the server's mcp_protocol_error.
    log = tmp_path / "calls.jsonl"
    with McpServerProcess(log) as server:
        async with connect(McpEndpoint("tools", server.url), LOCAL) as session:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:

                    async def die_mid_call() -> None:
                        while not log.exists() or "slow" not in log.read_text():  # bounded by fail_after
                            await anyio.sleep(0.02)
                        server.kill()  # the tool under way (it sleeps 20 s)

                    tg.start_soon(die_mid_call)
                    with pytest.raises(McpUnreachable) as caught:
                        await session.call_tool("slow", {"seconds": 20})
    err = caught.value
    assert (err.status, err.body.code) == (424, "mcp_server_unreachable"), err.body
    assert err.body.message.startswith("MCP server tools: calling tool slow: ") and "closed" in err.body.message
