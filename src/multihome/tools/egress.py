"""Where an MCP call may connect: the `egress:` rules (config/egress.py), enforced on the address
actually dialled.

The host is resolved (`resolve`) and the connection made to an address that passed the check (dial.py), so
a name that resolves to an allowed address when checked and to the metadata service when dialled (DNS
rebinding) cannot get through: there is one resolution, and it is the one used. TLS still
verifies the certificate for the host name (httpcore takes the server name from the URL).

A registration is judged too (`registration_refusal`, by the admin API): a URL whose host resolves, now, to
no allowed address is refused with the call's reason, so an admin hears of it at once. That is early
feedback, not the guard: a name that cannot be resolved then is accepted, and a name's addresses and the
rules may change before a call, which is checked again as it is dialled.

The policy and the resolution are here; the guarded connection is in dial.py, imported with the MCP client
on the first MCP call, so a gateway starts without loading httpx and httpcore (~0.2 s of imports on a busy
machine).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any
from urllib.parse import urlsplit

from ..config.egress import EgressConfig
from ..schema.errors import echo
from ..tenant_tally import TallyFull, TenantTally

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
        if isinstance(addr, IPv6Address):
            inner = _embedded(addr)
            if inner is not None:  # reaches that IPv4 address through a translator: its verdict is the one
                return self.allows(inner)
        return self.allow_public and _public(addr)


# Globally routable unicast IPv6 is 2000::/3 (IANA); Python's `is_global` also says yes to unassigned
# space (4000::1), the deprecated site-local fec0::/10 that old internal networks still route, and, before
# Python 3.12.4 (the gateway runs on 3.11), RFC 8215's local-use NAT64 prefix, which reaches whatever IPv4
# address the local translator embeds: 64:ff9b:1::a9fe:a9fe is the metadata service. So the verdict is
# not left to the running Python's tables alone: these are never public (IANA special-purpose registries,
# "globally reachable: false").
_GLOBAL_UNICAST = IPv6Network("2000::/3")
_NOT_PUBLIC: tuple[IPv4Network | IPv6Network, ...] = (
    IPv4Network("0.0.0.0/8"),
    IPv4Network("100.64.0.0/10"),  # carrier-grade NAT
    IPv4Network("192.0.0.0/24"),  # IETF protocol assignments (Python < 3.12.4: only a /29 of it)
    IPv4Network("198.18.0.0/15"),
    IPv4Network("240.0.0.0/4"),
    IPv6Network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
    IPv6Network("2001::/23"),  # IETF protocol assignments: Teredo, benchmarking, ORCHID
    IPv6Network("2001:db8::/32"),  # documentation
    IPv6Network("3fff::/20"),  # documentation (RFC 9637)
    IPv6Network("fec0::/10"),  # site-local (deprecated, still routed inside some networks)
)


def _public(addr: Address) -> bool:
    if not addr.is_global or addr.is_multicast:
        return False
    if isinstance(addr, IPv6Address) and addr not in _GLOBAL_UNICAST:
        return False
    return not any(addr in net for net in _NOT_PUBLIC)


# IPv6 spellings of an IPv4 address that a translator or tunnel delivers to it, and which Python's
# `is_global` calls public whatever they embed: NAT64's well-known prefix (RFC 6052; an IPv6-only
# cluster's NAT64 gateway reaches 64:ff9b::10.0.0.1, i.e. 10.0.0.1), SIIT's IPv4-translated form
# (RFC 2765) and the deprecated IPv4-compatible form. 6to4 (2002::/16) embeds it in bits 16-48.
_NAT64 = (IPv6Network("64:ff9b::/96"), IPv6Network("::ffff:0:0:0/96"), IPv6Network("::/96"))


def _embedded(addr: IPv6Address) -> IPv4Address | None:
    if addr.sixtofour is not None:
        return addr.sixtofour
    if any(addr in net for net in _NAT64):
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


async def resolve(host: str, port: int, tenant: str = "") -> list[Address]:
    """Every address `host` stands for: an IP literal as itself, anything else as the system resolver reads
    it (a name, or an address spelt as inet_aton reads one: 2130706433, 0x7f.1, 127.1), IDNA-encoded as
    httpcore's own dial would. The dial's resolution, on the dial's own threads (`_DIAL`), counted against
    `tenant`'s share of them. OSError (socket.gaierror) when the host cannot be resolved, or when too many
    lookups (of the tenant's, or of all) are still running."""
    return await _DIAL.lookup(host, port, tenant)


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[Address]:
    seen: dict[str, Address] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        if isinstance(sockaddr[0], int):  # (an IPv6 answer where IPv6 is disabled: anyio leaves it out too)
            continue
        text = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 scope id is not part of the address
        seen.setdefault(text, ip_address(text))
    return list(seen.values())


_SHOWN = 8  # addresses a refusal names


def refusal(host: str, addresses: Iterable[Address]) -> str:
    """Why `host` is not dialled, none of its `addresses` being allowed: the call's 403 and the
    registration's 400 say it in these words."""
    texts = sorted({str(a) for a in addresses})
    # A few, and how many more: the name's zone picks how many addresses it has (thousands over TCP).
    shown = ", ".join(texts[:_SHOWN]) + (f" and {len(texts) - _SHOWN} more" if len(texts) > _SHOWN else "")
    shown = shown or "no address"
    return (
        f"{echo(host)} ({shown}) is not an address the gateway may connect to: public addresses only, "
        'unless listed in egress.allow_networks (docs/agents.md "What a tenant can reach")'
    )


REGISTRATION_RESOLVE_S = 2.0  # an admin's answer waits at most this long for the resolver


class _Resolver:
    """Lookups on threads of their own, not the loop's default executor (where the usage spool's fsync, the
    KMS and the call log run): the system resolver holds its thread until it gives up (seconds, for a name
    whose nameserver does not answer), which a bound on the wait does not shorten, so lookups of such names
    filled that executor and stalled every tenant's calls.

    At most `pending` run at once, each on a thread of its own (none waits behind a hung one), a hung one
    counted until its thread returns; of them, at most `per_tenant` are one tenant's, so a tenant whose names
    hang fills its own share, not the others': past either bound `lookup` fails at once, saying which."""

    def __init__(self, pending: int, per_tenant: int, name: str) -> None:
        self.pending, self.per_tenant, self.name = pending, per_tenant, name
        self._lookups = TenantTally(per_tenant, total=pending)  # given back on the resolver's threads
        self.pool: ThreadPoolExecutor | None = None  # made at the first lookup of a name

    async def lookup(self, host: str, port: int, tenant: str = "") -> list[Address]:
        try:
            return [ip_address(host)]
        except ValueError:
            pass
        try:
            self._lookups.take(tenant)
        except TallyFull as full:
            too_many = (
                "too many host lookups still running"
                if full.everyone
                else f"too many of this tenant's host lookups still running ({self.per_tenant}, its share)"
            )
            raise socket.gaierror(socket.EAI_AGAIN, f"{too_many}; try again shortly") from None
        try:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.pending, thread_name_prefix=self.name)
            job = self.pool.submit(_getaddrinfo, host, port)
        except BaseException:
            self._lookups.give(tenant)
            raise
        # Given back when the thread returns, or at once when the wait ends before the job started (cancelled).
        job.add_done_callback(lambda _: self._lookups.give(tenant))
        return await asyncio.wrap_future(job)


# Separate for the dial and for registrations: a tenant admin registering names that hang cannot hold up
# the lookups of MCP calls; past its share, a registration is not judged, as under any slow resolver. A
# tenant's share is an eighth of the whole: the others' lookups find threads free unless eight tenants' all hang.
_DIAL = _Resolver(pending=64, per_tenant=8, name="mcp-dns")
_REGISTRATION = _Resolver(pending=8, per_tenant=2, name="mcp-registration-dns")


def _getaddrinfo(host: str, port: int) -> list[Address]:
    """A name's addresses, on the calling thread (IDNA-encoded as anyio's getaddrinfo does)."""
    try:
        try:
            encoded = host.encode("ascii")
        except UnicodeEncodeError:
            import idna

            encoded = idna.encode(host, uts46=True)
    except UnicodeError as exc:  # a label over 63 characters, or one IDNA refuses (idna.IDNAError is one)
        raise socket.gaierror(socket.EAI_NONAME, f"not a host name DNS can hold ({exc})") from None
    return _addresses(socket.getaddrinfo(encoded, port, type=socket.SOCK_STREAM))


async def registration_refusal(
    policy: EgressPolicy, url: str, tenant: str = "", timeout_s: float = REGISTRATION_RESOLVE_S
) -> str | None:
    """Why an MCP server at `url` (a checked one, tools/spec.py `check_url`) could not be called under
    `policy` today: its host resolves, now, and to no allowed address. None when an address is allowed, and
    when the host cannot be resolved within `timeout_s` (no DNS here, NXDOMAIN, a slow resolver, `tenant`'s
    share of the lookups taken): DNS may answer otherwise by the first call, whose dial is checked anyway."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await asyncio.wait_for(_REGISTRATION.lookup(host, port, tenant), timeout_s)
    except (OSError, TimeoutError):
        return None
    if not addresses or any(policy.allows(a) for a in addresses):
        return None
    return refusal(host, addresses)
