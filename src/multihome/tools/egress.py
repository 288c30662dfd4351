"""Where an MCP call may connect: the `egress:` rules (config/egress.py), enforced on the address
actually dialled.

The host is resolved (dial.py) and the connection made to an address that passed the check, so a name
that resolves to an allowed address when checked and to the metadata service when dialled (DNS
rebinding) cannot get through: there is one resolution, and it is the one used. TLS still
verifies the certificate for the host name (httpcore takes the server name from the URL).

The policy is here; the guarded connection is in dial.py, imported with the MCP client on the first MCP
call, so a gateway starts without loading httpx and httpcore (~0.2 s of imports on a busy machine).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from ..config.egress import EgressConfig

Address = IPv4Address | IPv6Address


class EgressPolicy:
    def __init__(self, allow_networks: Iterable[str] = (), allow_public: bool = True) -> None:
        self.networks: list[IPv4Network | IPv6Network] = [ip_network(n, strict=False) for n in allow_networks]
        self.allow_public = allow_public
        self._tls: ssl.SSLContext | None = None

    def tls(self) -> ssl.SSLContext:
        """The TLS context of every connection under this policy: httpx's defaults, built once (a context
        is safe to share; certificates are still verified for each host)."""
        if self._tls is None:
            import httpx2

            self._tls = httpx2.create_ssl_context()
        return self._tls

    @classmethod
    def from_config(cls, cfg: EgressConfig) -> EgressPolicy:
        return cls(cfg.allow_networks, cfg.allow_public)

    def allows(self, addr: Address) -> bool:
        if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        if any(addr in net for net in self.networks):
            return True
        return self.allow_public and addr.is_global
