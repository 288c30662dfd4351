"""What the MCP client and the registry share, without the SDK: a server to call (`McpEndpoint`)
and a tool it lists (`McpTool`). Kept apart so the admin API and the resolver do not import the
`mcp` SDK (about a second at start-up) until a request calls a server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

ERROR_MARKER = "[MCP tool error] "  # what a function output starts with when the tool failed
# The `_meta` key of a tools/call request that carries its idempotency key: one per call of a run, the
# same when a resumed run tries it again, so a server can do it once (docs/agents.md "Durability").
IDEMPOTENCY_META = "multihome/idempotency_key"


@dataclass(frozen=True)
class McpEndpoint:
    """Where a registered server is and what to send it. `headers` hold credentials: never in repr."""

    name: str  # the registered server's name (errors name it)
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    tenant: str = ""  # whose registration: its host lookups count against that tenant's share (egress.py)


class McpTool(msgspec.Struct, frozen=True):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    annotations: dict[str, Any] | None = None

    @property
    def read_only(self) -> bool:
        return bool((self.annotations or {}).get("readOnlyHint"))
