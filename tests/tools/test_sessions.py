"""A run's MCP sessions: one per server for all of its listings and calls (the SDK's handshake is
paid once), a failure reported to the caller that asked, and a new session after one failed."""

from __future__ import annotations

import pytest

from mcp_server import free_port
from multihome.tools.egress import EgressPolicy
from multihome.tools.mcp_client import McpToolTimeout, McpUnreachable
from multihome.tools.model import McpEndpoint
from multihome.tools.sessions import Sessions

pytestmark = pytest.mark.anyio
LOOPBACK = EgressPolicy(["127.0.0.0/8"])  # the test server listens on loopback


def _session_ids(server, since: int) -> set[str]:
    return {r["mcp-session-id"] for r in server.requests[since:] if "mcp-session-id" in r}


async def test_one_session_serves_the_whole_run(mcp_server):
    sessions, endpoint, before = (
        Sessions(egress=LOOPBACK),
        McpEndpoint("tools", mcp_server.url),
        len(mcp_server.requests),
    )
    try:
        tools = await sessions.use(endpoint, lambda s: s.list_tools())
        assert "echo" in [t.name for t in tools]
        outs = [await sessions.use(endpoint, lambda s, i=i: s.call_tool("echo", {"text": f"n{i}"})) for i in range(3)]
        assert [o.output for o in outs] == [f'{{"result":"n{i}"}}' for i in range(3)]
    finally:
        await sessions.close()
    assert len(_session_ids(mcp_server, before)) == 1  # one initialize for a listing and three calls


async def test_a_timeout_keeps_the_session_and_a_dead_server_is_reported(mcp_server):
    from multihome.tools.mcp_client import McpLimits

    sessions = Sessions(McpLimits(call_timeout_s=0.3, egress=LOOPBACK))
    endpoint, before = McpEndpoint("tools", mcp_server.url), len(mcp_server.requests)
    try:
        with pytest.raises(McpToolTimeout):
            await sessions.use(endpoint, lambda s: s.call_tool("slow", {"seconds": 2}))
        out = await sessions.use(endpoint, lambda s: s.call_tool("echo", {"text": "still here"}))
        assert out.output == '{"result":"still here"}' and len(_session_ids(mcp_server, before)) == 1
        nowhere = McpEndpoint("gone", f"http://127.0.0.1:{free_port()}/mcp")
        for _ in range(2):  # the failed session is dropped: the next use tries again, and fails again
            with pytest.raises(McpUnreachable):
                await sessions.use(nowhere, lambda s: s.list_tools())
    finally:
        await sessions.close()
