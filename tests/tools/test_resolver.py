"""A Responses request's `mcp` tool resolved against the tenant's registry: only registered servers
(by URL or by name; any other URL is a 400, so no SSRF), allowed tools intersected, approvals only
ever added, request headers added but never replacing registered ones."""

from __future__ import annotations

import pytest

from mcp_server import McpTestServer
from multihome.schema.errors import ApiError
from multihome.tools.egress import EgressPolicy
from multihome.tools.mcp_client import McpLimits, connect
from multihome.tools.model import McpTool
from multihome.tools.resolver import McpResolver

pytestmark = pytest.mark.anyio


def _tool(name: str, read_only: bool = False) -> McpTool:
    return McpTool(name, {"type": "object"}, annotations={"readOnlyHint": True} if read_only else None)


def register(store, tenant: str, name: str, url: str = "https://crm.example.com/mcp", **given):
    fields = {"description": "", "allowed_tools": None, "require_approval": "never", "headers": {}, **given}
    return store.create(tenant, name, url=url, actor="admin", **fields)


@pytest.fixture
async def resolver(store):
    await register(
        store,
        "t1",
        "crm",
        "https://CRM.example.com:443/mcp",
        allowed_tools=["lookup", "update", "delete"],
        require_approval={"never": {"tool_names": ["lookup"]}},
        headers={"Authorization": "Bearer registered"},
    )
    await register(store, "t2", "crm")
    return McpResolver(store)


async def _refused(resolver, tenant: str, tool: dict) -> dict:
    with pytest.raises(ApiError) as caught:
        await resolver.resolve(tenant, tool, "tools[0]")
    assert caught.value.status == 400
    return {"message": caught.value.body.message, "param": caught.value.body.param, "code": caught.value.body.code}


async def test_a_registered_server_by_url_or_by_name(resolver):
    by_url = await resolver.resolve(
        "t1", {"type": "mcp", "server_label": "c", "server_url": "https://crm.example.com/mcp"}
    )
    by_name = await resolver.resolve("t1", {"type": "mcp", "server_label": "crm"})
    for resolved in (by_url, by_name):
        assert resolved.server.name == "crm" and resolved.server.tenant_id == "t1"
        assert dict(resolved.endpoint.headers) == {"Authorization": "Bearer registered"}
        assert resolved.endpoint.tenant == "t1"  # its dial's host lookups count against t1's share (egress.py)
    assert by_url.label == "c"


@pytest.mark.parametrize(
    "url",
    [
        "http://crm.example.com/mcp",  # another scheme
        "https://crm.example.com/other",
        "https://crm.example.com:8443/mcp",
        "http://127.0.0.1:6379/",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_any_url_not_registered_for_the_tenant_is_refused(resolver, url):
    refused = await _refused(resolver, "t1", {"type": "mcp", "server_label": "x", "server_url": url})
    assert refused["code"] == "mcp_server_not_registered" and refused["param"] == "tools[0].server_url"
    assert "not registered for tenant t1" in refused["message"] and "/mcp-servers" in refused["message"]


async def test_another_tenants_server_is_not_this_tenants(resolver, store):
    await store.delete("t2", "crm")
    refused = await _refused(resolver, "t2", {"type": "mcp", "server_label": "crm"})
    assert refused["code"] == "mcp_server_not_registered" and "tenant t2" in refused["message"]
    refused = await _refused(
        resolver, "t2", {"type": "mcp", "server_label": "x", "server_url": "https://crm.example.com/mcp"}
    )
    assert refused["code"] == "mcp_server_not_registered"
    for bad in (
        {"type": "mcp", "server_label": "x", "connector_id": "connector_gmail"},
        {"type": "mcp", "server_label": "crm", "tunnel_id": "tun_1"},  # even beside a registered server's name
        {"type": "mcp"},
    ):
        assert (await _refused(resolver, "t1", bad))["param"] == "tools[0]"
    refused = await _refused(resolver, "t1", {"type": "mcp", "server_label": "x", "server_url": "file:///etc/passwd"})
    assert refused["param"] == "tools[0].server_url"


async def test_allowed_tools_intersect_and_approvals_only_add(resolver):
    tools = [_tool("lookup", read_only=True), _tool("update"), _tool("delete"), _tool("unlisted")]
    plain = await resolver.resolve("t1", {"type": "mcp", "server_label": "crm"})
    assert [t.name for t in tools if plain.allows(t)] == ["lookup", "update", "delete"]
    assert [t.name for t in tools if plain.needs_approval(t)] == ["update", "delete", "unlisted"]

    asked = await resolver.resolve(
        "t1",
        {
            "type": "mcp",
            "server_label": "crm",
            "allowed_tools": ["lookup", "update", "unlisted"],
            "require_approval": "never",
        },
    )
    assert [t.name for t in tools if asked.allows(t)] == ["lookup", "update"]  # never "unlisted": not registered
    assert [t.name for t in tools if asked.needs_approval(t)] == [
        "update",
        "delete",
        "unlisted",
    ]  # "never" adds nothing

    stricter = await resolver.resolve(
        "t1",
        {"type": "mcp", "server_label": "crm", "allowed_tools": {"read_only": True}, "require_approval": "always"},
    )
    assert [t.name for t in tools if stricter.allows(t)] == ["lookup"]
    assert stricter.needs_approval(tools[0])  # the request asked for approval of every call

    open_ = await resolver.resolve("t2", {"type": "mcp", "server_label": "crm", "allowed_tools": ["a"]})
    assert [t.name for t in [_tool("a"), _tool("b")] if open_.allows(t)] == ["a"]
    assert not open_.needs_approval(_tool("a"))


async def test_request_headers_add_but_never_replace(resolver):
    added = await resolver.resolve("t1", {"type": "mcp", "server_label": "crm", "headers": {"X-Request-Id": "r1"}})
    assert dict(added.endpoint.headers) == {"Authorization": "Bearer registered", "X-Request-Id": "r1"}
    assert added.endpoint.tenant == "t1"
    for tool in (
        {"type": "mcp", "server_label": "crm", "headers": {"authorization": "Bearer mine"}},
        {"type": "mcp", "server_label": "crm", "authorization": "mine"},
    ):
        refused = await _refused(resolver, "t1", tool)
        assert refused["param"] == "tools[0].headers" and "registered for MCP server crm" in refused["message"]
        assert "mine" not in refused["message"]
    token = await resolver.resolve("t2", {"type": "mcp", "server_label": "crm", "authorization": "tok"})
    assert dict(token.endpoint.headers) == {"Authorization": "Bearer tok"}
    refused = await _refused(resolver, "t2", {"type": "mcp", "server_label": "crm", "headers": {"Host": "evil"}})
    assert refused["param"] == "tools[0].headers"


async def test_several_servers_at_one_url_are_told_apart_by_label(resolver, store):
    await register(store, "t1", "crm-ro")
    refused = await _refused(
        resolver, "t1", {"type": "mcp", "server_label": "x", "server_url": "https://crm.example.com/mcp"}
    )
    assert "crm, crm-ro" in refused["message"]
    chosen = await resolver.resolve(
        "t1", {"type": "mcp", "server_label": "crm-ro", "server_url": "https://crm.example.com/mcp"}
    )
    assert chosen.server.name == "crm-ro"


async def test_a_resolved_server_is_called_with_the_registered_and_the_added_headers(store):
    with McpTestServer(require_header=("authorization", "Bearer registered-token")) as server:
        await register(store, "t1", "live", server.url, headers={"Authorization": "Bearer registered-token"})
        resolved = await McpResolver(store).resolve(
            "t1",
            {"type": "mcp", "server_label": "live", "headers": {"X-Trace": "t-1"}, "allowed_tools": ["echo", "add"]},
        )
        async with connect(resolved.endpoint, McpLimits(egress=EgressPolicy(["127.0.0.0/8"]))) as session:
            offered = [t.name for t in await session.list_tools() if resolved.allows(t)]
            assert offered == ["add", "echo"]
            assert (await session.call_tool("echo", {"text": "hi"})).output == '{"result":"hi"}'
        seen = server.requests
        assert seen and all(r["authorization"] == "Bearer registered-token" and r["x-trace"] == "t-1" for r in seen)


async def test_a_tool_is_resolved_with_one_read_of_its_server(resolver, store):
    """An agent run resolves its tools on every request: the server's row is read once, its endpoint
    opened from that row (it was read twice, for the view and again for the endpoint)."""
    from sqlalchemy import event

    by_url = {"type": "mcp", "server_label": "c", "server_url": "https://crm.example.com/mcp"}
    by_name = {"type": "mcp", "server_label": "crm"}
    for tool in (by_url, by_name):  # warm: the tenant's data key is read (and cached) on first use
        await resolver.resolve("t1", tool)
    reads: list[str] = []

    def seen(conn, cursor, statement, *rest) -> None:
        if "mcp_servers" in statement:
            reads.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        for tool in (by_url, by_name):
            resolved = await resolver.resolve("t1", tool)
            assert dict(resolved.endpoint.headers) == {"Authorization": "Bearer registered"}
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
    assert len(reads) == 2, reads
