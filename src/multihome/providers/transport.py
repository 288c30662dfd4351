"""One upstream connection pool per provider, on pyqwest (reqwest/hyper on its own Tokio thread).

pyqwest sets its connect, read (first byte, then every gap) and total timeouts per transport, where the
gateway sets them per model group: a provider's pool is one transport per distinct set of timeouts its
groups use (usually one). Each keeps its own connections. Cancelling a call aborts its upstream request
(the connection is closed at once: a hedge's loser, a client that went away). No system proxy, no
redirects followed (routing/attempts.py `_redirect`), no cookies, no User-Agent (as aiohttp's session),
gzip asked for and undone, header names in lower case (hyper's own). TLS trusts the system's CA
store, or SSL_CERT_FILE / SSL_CERT_DIR when set.
"""

from __future__ import annotations

import os

from pyqwest import HTTPTransport, Proxy, ReadError, RemoteProtocolError, WriteError
from pyqwest._pyqwest import Client as Client  # the native client: its calls are awaitables, no wrapper coroutine

from .gate import Gate

# reqwest reads HTTP(S)_PROXY unless a proxy is given: this one is given, and is bypassed for every
# host ("*" matches names, the two nets every address), so no call goes through any proxy. Were a host
# ever not matched, the call would fail on the closed port 9, not reach a proxy.
_NO_PROXY = Proxy("http://127.0.0.1:9", no_proxy="*,0.0.0.0/0,::/0")

# What a failed call raises besides TimeoutError (pyqwest's timeouts: connect, a read, total).
# ConnectionError is the builtin one (refused, reset, DNS).
UPSTREAM_ERRORS = (ConnectionError, RemoteProtocolError, ReadError, WriteError)

# Tokio reads it when pyqwest starts its runtime, at the process's first transport.
RUNTIME_THREADS_ENV = "TOKIO_WORKER_THREADS"


def use_upstream_threads(n: int) -> None:
    """How many threads run upstream I/O (`server.upstream_threads`): set before the first transport is
    made, so for a whole process (and the workers `serve --workers` starts, which inherit it)."""
    os.environ[RUNTIME_THREADS_ENV] = str(n)


def on_loop_thread() -> None:
    """Call on the event loop's thread once it runs. pyqwest asks sniffio which async library runs each
    request; saying so in sniffio's thread-local (its hook for this) makes that a lookup, where sniffio
    would otherwise import asyncio and look for the current task: ~0.9 µs per upstream request."""
    try:
        import sniffio  # pyqwest's optional dependency: without it, it takes asyncio as given
    except ModuleNotFoundError:
        return
    sniffio.thread_local.name = "asyncio"


Timeouts = tuple[float, float, float | None]  # connect_s, first_byte_s, total_s
Upstream = tuple[Client, Gate]  # a client of a pool and the pool's gate (its max_connections)


class ProviderPool:
    """A provider's clients, one per set of timeouts, made on first use and closed together. Their
    requests in flight, all clients together, are capped by one gate (`max_connections`): pyqwest
    0.12.0 does not enforce its own cap."""

    def __init__(self, provider: str, max_connections: int) -> None:
        self.provider = provider
        self.max_connections = max_connections
        self.gate = Gate(max_connections)
        self._clients: dict[Timeouts, tuple[HTTPTransport, Upstream]] = {}

    def upstream(self, timeouts: Timeouts) -> Upstream:
        """The client with these timeouts and the pool's gate (one tuple per client: groups share it)."""
        found = self._clients.get(timeouts)
        if found is None:
            transport = _transport(self.max_connections, timeouts)
            found = self._clients[timeouts] = (transport, (Client(transport), self.gate))
        return found[1]

    def client(self, timeouts: Timeouts) -> Client:
        return self.upstream(timeouts)[0]

    def any_client(self) -> Client:
        """A client of this provider for a call that sets its own total timeout (health probes)."""
        if self._clients:
            return next(iter(self._clients.values()))[1][0]
        return self.client((5.0, 60.0, None))

    async def close(self) -> None:
        for transport, _ in self._clients.values():
            await transport.aclose()
        self._clients.clear()


def _transport(max_connections: int, timeouts: Timeouts) -> HTTPTransport:
    connect_s, first_byte_s, total_s = timeouts
    transport = HTTPTransport(
        # pyqwest trusts no CA unless told (TLS would fail for every https provider). The system's
        # store, as aiohttp's default SSL context trusted; SSL_CERT_FILE / SSL_CERT_DIR replace it as
        # they did for OpenSSL (an enterprise's TLS-inspecting proxy CA: docs/deploy.md).
        tls_include_system_certs=True,
        proxy=_NO_PROXY,
        follow_redirects=False,
        enable_gzip=True,
        enable_brotli=False,
        enable_zstd=False,
        enable_otel=False,  # its spans and metrics cost per call; the gateway meters itself
        max_connections_per_address=max_connections,
        # pyqwest keeps 2 idle connections per host unless told: a burst's others would be closed and
        # opened again; aiohttp's pool kept up to its limit, as here.
        pool_max_idle_per_host=max_connections,
        pool_idle_timeout=60.0,
        connect_timeout=connect_s,
        read_timeout=first_byte_s,
        timeout=total_s,
    )
    return transport


class Transport:
    def __init__(self) -> None:
        self._pools: dict[str, ProviderPool] = {}

    def open(self, provider: str, max_connections: int) -> ProviderPool:
        pool = ProviderPool(provider, max_connections)
        self._pools[provider] = pool
        return pool

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
