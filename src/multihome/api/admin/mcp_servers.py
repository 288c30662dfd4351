"""Admin resource: the MCP servers a tenant's requests may reach, `/admin/v1/tenants/{tenant}/mcp-servers`.

Registering is the decision of what a tenant can reach: a Responses request's `mcp` tool is resolved
to one of these or refused (tools/resolver.py; docs/agents.md "MCP servers"). Header values (API
keys, bearer tokens for the server) are sealed under the tenant's `credentials` data key before
anything is written (a KMS that cannot be reached answers 503 and nothing is stored); answers and
audit events name the headers, never their values. The tenant's admins manage them (org-admin any
tenant's); its auditors may read the registrations.

A URL whose host resolves, now, to no address the `egress:` rules allow is refused (400
`mcp_egress_denied`, the words a call to it would fail with) before anything is stored: an admin hears
at once that the server cannot be reached, not at every later call. A host that cannot be resolved now
is accepted; every call is judged again where it is dialled (tools/egress.py).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec

from ...schema.errors import ApiError
from ...storage.errors import NotFound
from ...tools.egress import registration_refusal
from ...tools.servers import McpServerStore, McpServerView
from ...tools.spec import check_approval, check_description, check_headers, check_name, check_tool_names, check_url
from . import bodies as B
from .pages import QUERY, SAYS, asked, paged
from .rbac import READ, WRITE
from .route import AdminCall, Needs, Route, Services, deleted
from .tenancy import T

M = T + "/{tenant}/mcp-servers"


def _store(s: Services) -> McpServerStore:
    return McpServerStore(s.crypto.keyring, s.crypto.keyrings.engine)


async def _reachable(s: Services, tenant: str, url: str) -> None:
    """A 400 when the host of `url` (checked by `check_url`) resolves only to addresses the egress rules
    refuse (resolved by the dial's own code, for at most ~2 s; a host not resolved is accepted)."""
    refused = await registration_refusal(s.egress, url, tenant)
    if refused is not None:
        raise ApiError(400, f"url: {refused}.", param="url", code="mcp_egress_denied")


async def list_mcp_servers(s: Services, c: AdminCall) -> Any:
    return paged(await _store(s).page(c.tenant, *asked(c)))


async def create_mcp_server(s: Services, c: AdminCall) -> Any:
    body: B.CreateMcpServer = c.body
    # No foreign key (a static-key tenant has no row): a name or a typo would register for no one.
    if s.known_tenant is not None and not await s.known_tenant(c.tenant):
        raise NotFound("tenant", c.tenant)
    name, url = check_name(body.name), check_url(body.url)
    description = check_description(body.description)
    allowed_tools = check_tool_names(body.allowed_tools, "allowed_tools")
    require_approval, headers = check_approval(body.require_approval), check_headers(body.headers)
    await _reachable(s, c.tenant, url)  # last: the whole body is checked before the resolver is waited for
    return await _store(s).create(
        c.tenant,
        name,
        url=url,
        description=description,
        allowed_tools=allowed_tools,
        require_approval=require_approval,
        headers=headers,
        actor=c.who.subject,
    )


async def get_mcp_server(s: Services, c: AdminCall) -> Any:
    return await _store(s).get(c.tenant, c.params["name"])


async def update_mcp_server(s: Services, c: AdminCall) -> Any:
    """Held to the create's checks, field by field; writes only what is given without reading the row
    first, so it also mends a row whose given fields cannot be read (tools/servers.py `update`)."""
    body: B.UpdateMcpServer = c.body
    changes: dict[str, Any] = {}
    if body.url is not msgspec.UNSET:
        changes["url"] = check_url(body.url)
    if body.description is not msgspec.UNSET:
        changes["description"] = check_description(body.description)
    if body.allowed_tools is not msgspec.UNSET:
        changes["allowed_tools"] = check_tool_names(body.allowed_tools, "allowed_tools")
    if body.require_approval is not msgspec.UNSET:
        changes["require_approval"] = check_approval(body.require_approval)
    if body.headers is not msgspec.UNSET:
        changes["headers"] = check_headers(body.headers)
    if "url" in changes:
        await _reachable(s, c.tenant, changes["url"])
    return await _store(s).update(c.tenant, c.params["name"], changes, c.who.subject)


async def delete_mcp_server(s: Services, c: AdminCall) -> Any:
    await _store(s).delete(c.tenant, c.params["name"])
    return deleted(c.params["name"], "mcp_server")


_NEEDS = Needs(lambda s: s.crypto, "MCP servers are kept in the database with sealed headers: set storage.url.")
_route = partial(Route, needs=_NEEDS, response=McpServerView, refresh=False, noun="MCP server")
ROUTES = (
    _route(
        "GET",
        M,
        READ,
        list_mcp_servers,
        "The MCP servers this tenant's requests may reach (header names, never their values), by name, " + SAYS,
        response=None,
        query=QUERY,
        tenant_must_exist=True,
    ),
    _route(
        "POST",
        M,
        WRITE,
        create_mcp_server,
        "Register an MCP server for the tenant: its URL (http/https; 400 mcp_egress_denied when its host "
        "resolves only to addresses the egress rules refuse), allowed tools, approval default and "
        "headers (sealed under the KMS before they are stored; 503 when the KMS cannot be reached)",
        B.CreateMcpServer,
        status=201,
        event="mcp_server.create",
        choices={"require_approval": '"always", "never" or {"always": {...}, "never": {...}}'},
    ),
    _route("GET", M + "/{name}", READ, get_mcp_server, "One registered MCP server (never its header values)"),
    _route(
        "PATCH",
        M + "/{name}",
        WRITE,
        update_mcp_server,
        "Change a registered MCP server; headers, when given, replace the whole set (sealed again)",
        B.UpdateMcpServer,
        event="mcp_server.update",
    ),
    _route(
        "DELETE",
        M + "/{name}",
        WRITE,
        delete_mcp_server,
        "Remove an MCP server: requests can no longer reach it",
        event="mcp_server.delete",
        response=None,
    ),
)
