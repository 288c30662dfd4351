"""The MCP tools one response offers its model, and the calls the gateway makes for it.

    box = Toolbox(resolved)                      # the request's `mcp` tools, resolved (resolver.py)
    listed = await box.prepare(context)          # `mcp_list_tools` items for servers not listed before
    box.functions()                              # the tools as chat function tools (`<label>__<tool>`)
    found = box.lookup("crm__lookup")            # (server, tool) for a function the model called
    item = await box.call(found, '{"a": 1}', item_id="mcp_…", key="resp_…/3")   # an `mcp_call` item

A server whose tools are already listed in the context (an `mcp_list_tools` item with the same
`server_label`, from an earlier turn) is not listed again, as at OpenAI; the request's tool filter
still applies to what is offered. Listings and calls share one MCP session per server for the run
(sessions.py), closed by `close()`; a run resumed on another replica opens its own. A call's result
or failure is always in its item: the item is a call with its result, never one without
(docs/agents.md "Durability").
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..schema.errors import ApiError
from .egress import EgressPolicy
from .model import IDEMPOTENCY_META, McpTool
from .names import SEPARATOR, NameMap
from .resolver import ResolvedMcp
from .servers import McpServerView
from .sessions import Sessions

Item = dict[str, Any]


@dataclass(frozen=True)
class Server:
    resolved: ResolvedMcp
    tools: dict[str, McpTool]  # the tools offered, by MCP name
    names: NameMap


@dataclass(frozen=True)
class Found:
    server: Server
    tool: McpTool

    @property
    def label(self) -> str:
        return self.server.resolved.label

    @property
    def needs_approval(self) -> bool:
        return self.server.resolved.needs_approval(self.tool)


class Toolbox:
    def __init__(
        self,
        resolved: list[ResolvedMcp],
        limits: Any = None,
        egress: EgressPolicy | None = None,
        registered: Callable[[McpServerView], Awaitable[bool]] | None = None,
    ) -> None:
        self.resolved = resolved
        # Whether a server's registration is still as the run resolved it (McpServerStore.unchanged), asked
        # before each call: an admin who deletes or changes one stops a running run's calls to it.
        self._registered = registered
        self.servers: dict[str, Server] = {}
        self._by_function: dict[str, Found] = {}
        self.sessions = Sessions(limits, egress)  # one per server, for the whole run

    async def close(self) -> None:
        await self.sessions.close()

    def label(self, label: str) -> ResolvedMcp | None:
        return next((r for r in self.resolved if r.label == label), None)

    async def prepare(self, context: list[Item], new_id: Any) -> list[Item]:
        """List each server's tools (or reuse the context's list); the new `mcp_list_tools` items.
        A server that cannot be listed is an McpFailure (424 naming it): nothing has run yet."""
        known = {i["server_label"]: i for i in context if i.get("type") == "mcp_list_tools" and not i.get("error")}
        out: list[Item] = []
        for resolved in self.resolved:
            earlier = known.get(resolved.label)
            if earlier is not None:
                tools = [_tool_of(t) for t in earlier.get("tools") or ()]
            else:
                tools = await self.sessions.use(resolved.endpoint, lambda session: session.list_tools())
            offered = [t for t in tools if resolved.allows(t)]
            if earlier is None:
                out.append(
                    {
                        "type": "mcp_list_tools",
                        "id": new_id("mcpl"),
                        "server_label": resolved.label,
                        "tools": [_listed(t) for t in offered],
                        "error": None,
                    }
                )
            try:
                names = NameMap(resolved.label, [t.name for t in offered])
            except ValueError as exc:  # two of its tools' names hashed alike (a server can search for a pair)
                from .mcp_client import McpProtocolError

                raise McpProtocolError(resolved.server.name, f"{exc}; the tool list cannot be offered") from None
            server = Server(resolved, {t.name: t for t in offered}, names)
            self.servers[resolved.label] = server
            for tool, function in names.items():
                taken = self._by_function.get(function)
                if taken is not None:  # the request's labels make two servers' names meet (`a` and `a__b`)
                    raise ApiError(
                        400,
                        f"MCP tools {taken.label}/{taken.tool.name} and {resolved.label}/{tool} would both be offered "
                        f"to the model as function {function}: give one of the servers another server_label.",
                        param="tools",
                        code="invalid_value",
                    )
                self._by_function[function] = Found(server, server.tools[tool])
        return out

    def functions(self) -> list[Item]:
        """Every offered tool as a chat function tool."""
        out = []
        for function, found in self._by_function.items():
            fn: Item = {"name": function, "parameters": found.tool.input_schema or {"type": "object", "properties": {}}}
            if found.tool.description:
                fn["description"] = found.tool.description[:1024]
            out.append({"type": "function", "function": fn})
        return out

    def lookup(self, function: str) -> Found | None:
        return self._by_function.get(function)

    def claimed(self, function: str) -> str | None:
        """The label of the run's server whose tools' function names `function` has the form of
        (`<label>__…`; the longest such label), whether or not the tool is offered; None if none."""
        labels = [label for label in self.servers if function.startswith(label + SEPARATOR)]
        return max(labels, key=len) if labels else None

    def find(self, label: str, tool: str) -> Found | None:
        server = self.servers.get(label)
        found = server.tools.get(tool) if server is not None else None
        return Found(server, found) if server is not None and found is not None else None

    async def call(
        self,
        found: Found,
        arguments: str,
        *,
        item_id: str,
        approval_request_id: str | None = None,
        key: str | None = None,
    ) -> Item:
        """Run the tool; its `mcp_call` item, with the output, or the error (a tool error, a server that
        failed): the model reads either and goes on. `key`: the call's idempotency key, sent in the
        request's `_meta` (`IDEMPOTENCY_META`), the same each time this call is tried."""
        from .mcp_client import McpFailure, McpProtocolError

        item: Item = {
            "type": "mcp_call",
            "id": item_id,
            "server_label": found.label,
            "name": found.tool.name,
            "arguments": arguments,
            "approval_request_id": approval_request_id,
            "output": None,
            "error": None,
            "status": "completed",
        }
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            args = None
        if not isinstance(args, dict):
            item.update(status="failed", error=_execution_error("The arguments are not a JSON object."))
            return item
        if self._registered is not None and not await self._registered(found.server.resolved.server):
            message = (
                f"MCP server {found.server.resolved.server.name} is no longer registered for this tenant as it was "
                "when this response began (an admin deleted or changed it), or its registration could not be read now: "
                "the call was not made."
            )
            item.update(status="failed", error=_execution_error(message))
            return item
        meta = {IDEMPOTENCY_META: key} if key else None
        try:
            out = await self.sessions.use(
                found.server.resolved.endpoint, lambda session: session.call_tool(found.tool.name, args, meta=meta)
            )
        except McpProtocolError as exc:
            item.update(
                status="failed", error={"type": "mcp_protocol_error", "code": -32603, "message": exc.body.message}
            )
            return item
        except McpFailure as exc:
            item.update(status="failed", error={"type": "http_error", "code": exc.status, "message": exc.body.message})
            return item
        if out.is_error:
            item.update(status="failed", error=_execution_error(out.output))
        else:
            item["output"] = out.output
        return item


def _execution_error(text: str) -> Item:
    return {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": text}]}


def _listed(tool: McpTool) -> Item:
    return {
        "name": tool.name,
        "input_schema": tool.input_schema,
        "description": tool.description,
        "annotations": tool.annotations,
    }


def _tool_of(listed: Item) -> McpTool:
    return McpTool(
        name=str(listed.get("name") or ""),
        input_schema=listed.get("input_schema") or {},
        description=listed.get("description"),
        annotations=listed.get("annotations"),
    )
