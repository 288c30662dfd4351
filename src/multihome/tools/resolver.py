"""A Responses request's `mcp` tool, resolved to a server an admin registered for the tenant.

    resolved = await McpResolver(store).resolve(tenant, tool, param="tools[0]")

A tenant reaches only what was registered for it (no SSRF): `server_url` must be the URL of one of
its registered servers (compared with scheme and host lower-cased and default ports dropped), or,
without `server_url`, `server_label` must be a registered server's name. Anything else is a 400
naming what is not registered and how to register it. `connector_id` and `tunnel_id` are refused.

What the request may add, and what it may not change:
- `headers` (and `authorization`, sent as `Authorization: Bearer …`) are added to the registered
  headers; a header the registration already sets cannot be replaced by a request (400 naming it):
  the admin's credentials stay the ones used.
- `allowed_tools` narrows the registered list (the intersection; a `read_only` filter keeps only
  tools annotated `readOnlyHint`); it never widens it.
- `require_approval` can only ask for more approvals: a tool waits for the client's approval if
  the registration or the request says so (the registration's default is `always`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from ..schema.errors import ApiError, echo, echo_quoted, no_retry
from ..storage.errors import NotFound, UnreadableRow
from .model import McpEndpoint, McpTool
from .servers import Loaded, McpServerStore, McpServerView
from .spec import AllowedTools, Approval, ToolSelector, check_approval, check_headers, check_url, needs_approval


class McpToolSpec(msgspec.Struct, kw_only=True):
    """The Responses API's `mcp` tool (OpenAI's shape; fields Multihome does not use are ignored)."""

    type: str = "mcp"
    server_label: str
    server_url: str | None = None
    server_description: str | None = None
    allowed_tools: AllowedTools | None = None
    require_approval: Approval | None = None
    headers: dict[str, str] | None = None
    authorization: str | None = None
    connector_id: str | None = None
    tunnel_id: str | None = None


@dataclass(frozen=True)
class ResolvedMcp:
    label: str  # the request's server_label: what mcp_list_tools / mcp_call items carry
    server: McpServerView  # the registration it resolved to
    endpoint: McpEndpoint = field(repr=False)  # registered headers (opened) plus the request's additions
    tool_names: frozenset[str] | None  # None: every tool the server lists
    read_only: bool  # only tools annotated readOnlyHint
    approvals: tuple[Approval, ...]

    def allows(self, tool: McpTool) -> bool:
        if self.tool_names is not None and tool.name not in self.tool_names:
            return False
        return tool.read_only or not self.read_only

    def needs_approval(self, tool: McpTool) -> bool:
        return any(needs_approval(rule, tool.name, tool.read_only) for rule in self.approvals)


class McpResolver:
    def __init__(self, store: McpServerStore) -> None:
        self.store = store

    async def resolve(self, tenant: str, tool: dict[str, Any], param: str = "tools") -> ResolvedMcp:
        try:
            spec = msgspec.convert(tool, McpToolSpec)
        except msgspec.ValidationError as exc:
            raise ApiError(
                400, f"Invalid mcp tool: {echo_quoted(str(exc))}.", param=param, code="invalid_value"
            ) from None
        if spec.connector_id is not None or spec.tunnel_id is not None:
            raise ApiError(
                400,
                "Multihome calls only MCP servers registered for your tenant: connector_id and tunnel_id are not "
                "supported; give server_url or the name of a registered server as server_label.",
                param=param,
                code="unsupported_value",
            )
        server, loaded = await self._server(tenant, spec, param)
        added = dict(spec.headers or {})
        if spec.authorization is not None:
            added["Authorization"] = f"Bearer {spec.authorization}"
        check_headers(added, f"{param}.headers")
        registered = {name.lower() for name in server.header_names}
        for name in added:
            if name.lower() in registered:
                raise ApiError(
                    400,
                    f"Header {name} is registered for MCP server {server.name} and cannot be replaced by a "
                    "request; leave it out (the registered value is sent).",
                    param=f"{param}.headers",
                    code="invalid_value",
                )
        try:
            endpoint = await loaded.endpoint()  # the row `_server` read, not read again
        except UnreadableRow as exc:
            raise _unreadable(exc, param) from None
        endpoint = replace(endpoint, headers={**endpoint.headers, **added})
        names, read_only = _allowed(server.allowed_tools, spec.allowed_tools)
        approvals: tuple[Approval, ...] = (server.require_approval,)
        if spec.require_approval is not None:
            approvals += (check_approval(spec.require_approval, f"{param}.require_approval"),)
        return ResolvedMcp(spec.server_label, server, endpoint, names, read_only, approvals)

    async def _server(self, tenant: str, spec: McpToolSpec, param: str) -> tuple[McpServerView, Loaded]:
        how = f"an admin registers MCP servers with POST /admin/v1/tenants/{tenant}/mcp-servers"
        if spec.server_url is None:
            try:
                [named] = await self.store.lookup(tenant, spec.server_label, None)
                return named
            except UnreadableRow as exc:
                raise _unreadable(exc, f"{param}.server_label") from None
            except NotFound:
                raise ApiError(
                    400,
                    f"No MCP server named {echo(spec.server_label)!r} is registered for tenant {tenant}: give the "
                    f"name of a registered server as server_label, or its server_url ({how}).",
                    param=f"{param}.server_label",
                    code="mcp_server_not_registered",
                ) from None
        url = check_url(spec.server_url, f"{param}.server_url")
        found: list[tuple[McpServerView, Loaded]] = await self.store.lookup(tenant, None, url)
        if not found:
            raise ApiError(
                400,
                f"MCP server URL {echo(url)} is not registered for tenant {tenant}; Multihome calls only "
                f"registered MCP servers ({how}).",
                param=f"{param}.server_url",
                code="mcp_server_not_registered",
            )
        if len(found) > 1:
            labelled = [s for s in found if s[0].name == spec.server_label]
            if not labelled:
                names = ", ".join(s[0].name for s in found)
                raise ApiError(
                    400,
                    f"Several MCP servers are registered at {echo(url)} ({names}): set server_label to the one meant.",
                    param=f"{param}.server_label",
                    code="invalid_value",
                )
            found = labelled
        return found[0]


def _unreadable(exc: UnreadableRow, param: str) -> ApiError:
    """A registration the gateway cannot read: 409 naming it and how an admin mends it (never a 500, never
    a call to the server without what the row should hold: its headers, its allowed tools)."""
    return ApiError(409, f"{exc}.", param=param, code="unreadable_row", headers=no_retry())


def _allowed(registered: list[str] | None, asked: AllowedTools | None) -> tuple[frozenset[str] | None, bool]:
    """The intersection of the registered tool list and the request's filter."""
    names = frozenset(registered) if registered is not None else None
    read_only = False
    if isinstance(asked, ToolSelector):
        read_only = bool(asked.read_only)
        asked = asked.tool_names
    if asked is not None:
        names = frozenset(asked) if names is None else names & frozenset(asked)
    return names, read_only
