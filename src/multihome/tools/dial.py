"""The connection an MCP call makes under the `egress:` rules (egress.py): the host resolved once
(egress.py `resolve`, as a registration's check resolves it) and only an allowed address dialled,
through httpcore's own asyncio backend. Imported with the MCP client (mcp_client.py), on the first MCP
call, not at gateway start.
"""

from __future__ import annotations

import httpcore2
import httpx2

from .egress import Address, EgressPolicy, refusal, resolve


class EgressDenied(httpcore2.ConnectError):
    """No address of the host is one the egress rules allow: nothing was sent."""


class GuardedBackend(httpcore2.AnyIOBackend):
    """httpcore's asyncio network backend (what httpx picks under asyncio), dialling only addresses the
    policy allows."""

    def __init__(self, policy: EgressPolicy, tenant: str = "") -> None:
        self.policy = policy
        self.tenant = tenant  # whose share of the lookups a dial's resolution counts against
        self.denied: str | None = None  # why the last connection was refused, for the caller's error

    async def connect_tcp(self, host: str, port: int, *args: object, **kwargs: object) -> httpcore2.AsyncNetworkStream:
        addresses = await _resolve(host, port, self.tenant)
        allowed = [a for a in addresses if self.policy.allows(a)]
        if not allowed:
            self.denied = refusal(host, addresses)
            raise EgressDenied(self.denied)
        failure: Exception | None = None
        for addr in allowed:
            try:
                return await super().connect_tcp(str(addr), port, *args, **kwargs)  # type: ignore[arg-type]
            except httpcore2.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure


def guarded_transport(policy: EgressPolicy, tenant: str = "") -> tuple[httpx2.AsyncHTTPTransport, GuardedBackend]:
    """An httpx transport whose connections go through the guard. httpx has no public way to give
    its pool a network backend, so the pool is replaced by one built with the same defaults. The TLS
    context is the policy's one (`EgressPolicy.tls`): loading the CA bundle costs ~50 ms of CPU, which
    every MCP session paid twice before."""
    tls = policy.tls()
    transport = httpx2.AsyncHTTPTransport(verify=tls)
    backend = GuardedBackend(policy, tenant)
    transport._pool = httpcore2.AsyncConnectionPool(ssl_context=tls, network_backend=backend)
    return transport, backend


async def _resolve(host: str, port: int, tenant: str) -> list[Address]:
    try:
        return await resolve(host, port, tenant)
    except OSError as exc:
        raise httpcore2.ConnectError(f"cannot resolve {host}: {exc}") from None
