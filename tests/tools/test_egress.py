"""The egress rules (config `egress:`, tools/egress.py): an MCP server at an address the organisation
did not allow is never contacted, whatever name or spelling its URL uses."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from builders import single, yaml_text
from mcp_server import McpTestServer
from multihome.config import ConfigError, parse_config
from multihome.tools.egress import EgressPolicy, registration_refusal
from multihome.tools.mcp_client import McpEgressDenied, McpLimits, connect
from multihome.tools.model import McpEndpoint

pytestmark = pytest.mark.anyio
OPEN = {"allow_unauthenticated": True}

NOT_PUBLIC = [
    "127.0.0.1",  # the gateway's own ports
    "169.254.169.254",  # cloud metadata
    "fd00:ec2::254",  # AWS metadata over IPv6
    "::ffff:169.254.169.254",  # the same, IPv4-mapped
    "10.1.2.3",
    "172.16.0.9",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "::1",
    "fe80::1",
    # IPv4 addresses spelt in IPv6 forms a translator or tunnel delivers to them (Python's is_global
    # calls each of these public): NAT64's well-known prefix, SIIT, IPv4-compatible, 6to4
    "64:ff9b::a9fe:a9fe",  # 169.254.169.254 through NAT64
    "64:ff9b::a00:1",  # 10.0.0.1
    "::ffff:0:7f00:1",  # 127.0.0.1, SIIT's IPv4-translated form
    "::7f00:1",  # 127.0.0.1, IPv4-compatible
    "2002:a9fe:a9fe::1",  # 169.254.169.254 through 6to4
    "224.0.0.1",  # multicast
    # Python 3.11's is_global calls each of these public: RFC 8215's local-use NAT64 prefix (a local
    # translator delivers 64:ff9b:1::a9fe:a9fe to 169.254.169.254), the deprecated site-local prefix, space
    # outside global unicast 2000::/3, documentation, IETF protocol assignments
    "64:ff9b:1::a9fe:a9fe",
    "64:ff9b:1:a9:fea9:fe00::",  # the same at a /56 prefix, which embeds it elsewhere
    "fec0::1",
    "4000::1",
    "5f00::1",
    "3fff::1",
    "192.0.0.8",
    "192.0.0.192",  # SSRF lists give it as Oracle Cloud's metadata address
]


@pytest.mark.parametrize("addr", NOT_PUBLIC)
def test_only_public_addresses_by_default(addr):
    assert not EgressPolicy().allows(ip_address(addr))
    assert EgressPolicy().allows(ip_address("8.8.8.8"))
    assert EgressPolicy().allows(ip_address("2606:4700:4700::1111"))


def test_an_embedded_ipv4_address_decides_for_its_ipv6_spelling():
    assert EgressPolicy().allows(ip_address("64:ff9b::808:808"))  # a public IPv4 server through NAT64
    assert EgressPolicy().allows(ip_address("2002:808:808::1"))
    assert EgressPolicy(["10.0.0.0/8"]).allows(ip_address("64:ff9b::a00:1"))  # listed, however spelt
    assert not EgressPolicy(["10.0.0.0/8"]).allows(ip_address("64:ff9b::a9fe:a9fe"))
    assert EgressPolicy(["64:ff9b::/96"]).allows(ip_address("64:ff9b::a00:1"))  # the IPv6 network listed itself


def test_listed_networks_are_allowed_and_public_can_be_closed():
    policy = EgressPolicy(["10.0.0.0/8", "fd00::/8"], allow_public=False)
    assert policy.allows(ip_address("10.9.9.9")) and policy.allows(ip_address("fd00:ec2::254"))
    assert not policy.allows(ip_address("8.8.8.8")) and not policy.allows(ip_address("192.168.1.1"))


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "[::]",
        "0.0.0.0",  # Linux delivers a connection to it on the host itself
        "127.1",
        "2130706433",  # 127.0.0.1 in decimal, octal and hex, as inet_aton reads them
        "017700000001",
        "0x7f.1",
        "[64:ff9b::7f00:1]",
    ],
)
async def test_a_server_at_a_refused_address_is_never_contacted(host):
    with McpTestServer() as server:
        url = server.url.replace("127.0.0.1", host)
        with pytest.raises(McpEgressDenied) as err:
            async with connect(McpEndpoint("internal", url)):
                pass
        assert err.value.status == 403 and err.value.body.code == "mcp_egress_denied"
        assert "egress.allow_networks" in err.value.body.message
        assert server.requests == []  # refused before anything was sent
        # A registration of it is refused in the same words (the admin API's 400), resolved the same way.
        said = await registration_refusal(EgressPolicy(), url)
        assert said is not None and said in err.value.body.message
        allowed = McpLimits(egress=EgressPolicy(["127.0.0.0/8"]))
        async with connect(McpEndpoint("internal", server.url), allowed) as session:
            assert await session.list_tools()  # listed, the same server is reached


async def test_a_registration_whose_host_cannot_be_resolved_now_is_not_judged(monkeypatch):
    """NXDOMAIN, or a resolver that does not answer within the bound: accepted (None), the call's dial is
    judged anyway; the dial itself still fails such a host as a connection error."""
    import anyio
    import httpcore2

    from multihome.tools.dial import GuardedBackend

    assert await registration_refusal(EgressPolicy(), "http://mcp.invalid/") is None
    with pytest.raises(httpcore2.ConnectError, match="cannot resolve mcp.invalid"):
        await GuardedBackend(EgressPolicy()).connect_tcp("mcp.invalid", 80)

    import socket
    import threading

    release = threading.Event()

    def hanging(*args, **kwargs):  # the system resolver, holding its thread
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "timed out")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)  # localhost would be refused, were it resolved
    try:
        with anyio.fail_after(60):  # a generous deadline: the bound under test is the check's own
            assert await registration_refusal(EgressPolicy(), "http://localhost/", timeout_s=0.2) is None
    finally:
        release.set()


async def test_registrations_against_a_hung_resolver_leave_the_default_executor_free(monkeypatch):
    """The system resolver blocks a thread until it gives up (seconds, for a name whose nameserver does not
    answer), and the 2 s bound only stops the wait. Registrations checked through the loop's default executor
    filled its few threads, where the usage spool's fsync, the KMS and the call log run: a tenant admin
    registering such names stalled every tenant's calls. A registration's check has threads of its own,
    and while too many of its resolutions are still running it is not judged (None), as a slow resolver."""
    import asyncio
    import socket
    import threading

    release = threading.Event()
    entered = threading.Semaphore(0)

    def hung(*args, **kwargs):
        entered.release()
        release.wait(120)
        raise socket.gaierror(socket.EAI_AGAIN, "timed out")

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    try:
        answers = await asyncio.gather(
            *(registration_refusal(EgressPolicy(), f"http://mcp{i}.example/", timeout_s=0.2) for i in range(40))
        )
        assert answers == [None] * 40
        for _ in range(600):  # (a resolution did reach the resolver; polled, not waited for in a thread)
            if entered.acquire(blocking=False):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no resolution reached the resolver")
        loop = asyncio.get_running_loop()
        # The default executor still runs work while those resolutions hang (a generous deadline).
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: "ran"), 30) == "ran"
    finally:
        release.set()


async def test_mcp_calls_against_a_hung_resolver_leave_the_default_executor_free(monkeypatch):
    """The dial's lookups ran on the loop's default executor too (anyio's getaddrinfo): a tenant's tool calls to
    a server whose name hangs filled it, stalling the usage spool's fsync and the KMS for every tenant. The
    dial has threads of its own; past 64 lookups still running, a dial fails at once as not resolved (a tenant's
    share of them is below, in test_a_tenant_whose_names_hang_fills_only_its_own_share_of_lookups)."""
    import asyncio
    import socket
    import threading

    import httpcore2

    from multihome.tools import egress
    from multihome.tools.dial import GuardedBackend

    release = threading.Event()

    def hung(*args, **kwargs):
        release.wait(120)
        raise socket.gaierror(socket.EAI_AGAIN, "timed out")

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    monkeypatch.setattr(egress, "_DIAL", egress._Resolver(pending=4, per_tenant=8, name="test-dns"))
    dials = [asyncio.ensure_future(GuardedBackend(EgressPolicy()).connect_tcp(f"mcp{i}.example", 80)) for i in range(4)]
    try:
        await asyncio.sleep(0.2)
        # Past the pending lookups: refused at once, as a name that does not resolve now.
        with pytest.raises(httpcore2.ConnectError, match="too many host lookups"):
            await asyncio.wait_for(GuardedBackend(EgressPolicy()).connect_tcp("mcp-more.example", 80), 30)
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: "ran"), 30) == "ran"
    finally:
        release.set()
        for dial in dials:
            with pytest.raises(httpcore2.ConnectError):
                await asyncio.wait_for(dial, 60)


def _hanging_for(monkeypatch, hung_host: str):
    """The system resolver as a hostile tenant's nameserver makes it: `hung_host` holds its thread until
    the returned event is set; every other name is 127.0.0.1 (the test MCP server)."""
    import socket
    import threading

    release = threading.Event()

    def getaddrinfo(host, port, *args, **kwargs):
        if host in (hung_host, hung_host.encode()):
            release.wait(120)
            raise socket.gaierror(socket.EAI_AGAIN, "timed out")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return release


async def test_a_tenant_whose_names_hang_fills_only_its_own_share_of_lookups(monkeypatch):
    """A tenant whose registered server's name never resolves (its nameserver hangs) dialled it 64 times: the
    dial's pending lookups were full, and every other tenant's MCP calls failed at once as "too many host
    lookups still running". A tenant has a share of them (8): past it, that tenant's dials fail alone, naming
    its share, and another tenant's call resolves its server's name and is served."""
    import asyncio

    import httpcore2

    from multihome.tools.dial import GuardedBackend

    release = _hanging_for(monkeypatch, "hang.example")
    hostile = GuardedBackend(EgressPolicy(), tenant="hostile")
    dials = [asyncio.ensure_future(hostile.connect_tcp("hang.example", 80)) for _ in range(80)]
    try:
        done, _ = await asyncio.wait(dials, timeout=60, return_when=asyncio.FIRST_EXCEPTION)
        refused = [d for d in done if d.exception() is not None]
        assert refused, "the hostile tenant's dials past its share did not fail at once"
        assert "too many of this tenant's host lookups" in str(refused[0].exception())
        with pytest.raises(httpcore2.ConnectError, match="this tenant's host lookups"):
            await asyncio.wait_for(hostile.connect_tcp("hang.example", 80), 30)
        with McpTestServer() as server:
            url = server.url.replace("127.0.0.1", "localhost")  # a name: resolved, on the shared threads
            limits = McpLimits(egress=EgressPolicy(["127.0.0.0/8"]))
            async with connect(McpEndpoint("crm", url, tenant="other"), limits) as session:
                assert await session.list_tools()
    finally:
        release.set()
        failed = await asyncio.wait_for(asyncio.gather(*dials, return_exceptions=True), 60)
        assert all(isinstance(f, httpcore2.ConnectError) for f in failed)


async def test_a_tenant_whose_names_hang_leaves_the_others_registrations_judged(monkeypatch):
    """Registrations' lookups are shared the same way: a tenant admin registering names that hang took all 8
    of them, and another tenant's registration of a refused address went unjudged (accepted). Past its share
    of 2, only that tenant's registrations go unjudged."""
    import asyncio

    release = _hanging_for(monkeypatch, "hang.example")
    hostile = [
        asyncio.ensure_future(registration_refusal(EgressPolicy(), "http://hang.example/", "hostile", timeout_s=60))
        for _ in range(10)
    ]
    try:
        await asyncio.sleep(0.2)
        said = await registration_refusal(EgressPolicy(), "http://internal.example/", "other", timeout_s=30)
        assert said is not None and said.startswith("internal.example (127.0.0.1)")
    finally:
        release.set()
        assert await asyncio.wait_for(asyncio.gather(*hostile), 60) == [None] * 10


async def test_a_host_idna_cannot_encode_is_a_name_that_does_not_resolve():
    """A 70-character non-ASCII label: the resolver's IDNA encoding raised UnicodeEncodeError out of the dial,
    not the connection error the MCP client reports as an unreachable server."""
    import httpcore2

    from multihome.tools.dial import GuardedBackend

    host = "ü" * 70 + ".example"
    assert await registration_refusal(EgressPolicy(), f"http://{host}/") is None
    with pytest.raises(httpcore2.ConnectError, match="cannot resolve"):
        await GuardedBackend(EgressPolicy()).connect_tcp(host, 80)


def test_the_config_refuses_a_network_that_is_not_one():
    with pytest.raises(ConfigError) as err:
        parse_config(yaml_text(single(server=OPEN, egress={"allow_networks": ["10.0.0.0/8", "intranet"]})))
    assert "egress" in str(err.value) and "'intranet' is not an IP network" in str(err.value)
    cfg = parse_config(yaml_text(single(server=OPEN, egress={"allow_networks": ["10.0.0.0/8"], "allow_public": False})))
    assert cfg.egress.allow_networks == ["10.0.0.0/8"] and cfg.egress.allow_public is False


async def test_a_name_with_hundreds_of_refused_addresses_is_refused_in_a_short_message(monkeypatch):
    """The refusal lists the addresses the host resolved to, and whoever runs its zone picks how many (a DNS
    answer over TCP holds thousands): the 400 (and the call's 403) names a few and counts the rest."""
    import socket

    many = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"10.0.{i // 250}.{i % 250 + 1}", 80)) for i in range(2000)]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: many)
    said = await registration_refusal(EgressPolicy(), "http://many.example/")
    assert said is not None and said.startswith("many.example (10.0.0.1, ")
    assert "1992 more" in said and len(said) < 600, len(said)
