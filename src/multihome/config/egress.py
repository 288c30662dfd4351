"""The `egress:` config section: the addresses the gateway may connect to on a tenant's behalf.

A tenant-admin registers MCP servers for their tenant (docs/agents.md); without this an admin of
one tenant could point the gateway at the cloud's metadata service, the gateway's own admin port or
any other host on its private network (server-side request forgery from the gateway's place in the
network). So only public addresses are reached unless the organisation lists more here.
"""

from __future__ import annotations

from ipaddress import ip_network

import msgspec

from .struct import Strict


class EgressConfig(Strict):
    # Networks (CIDR) reachable besides public addresses: an internal MCP server's subnet, say.
    allow_networks: list[str] = msgspec.field(default_factory=list)
    allow_public: bool = True  # false: only allow_networks (an organisation whose egress is closed)

    def __post_init__(self) -> None:
        for net in self.allow_networks:
            try:
                ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"allow_networks: {net!r} is not an IP network (e.g. 10.20.0.0/16)") from None
