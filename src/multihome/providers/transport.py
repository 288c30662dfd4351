"""One upstream connection pool per provider, on pyreqwest (reqwest/hyper on its own Tokio thread).

pyreqwest sets its connect and read (first byte, then every gap) timeouts per client, where the gateway
sets them per model group: a provider's pool is one client per distinct set of timeouts its groups use
(usually one). Each client keeps its own connections; `max_connections` bounds each one's requests in
flight. No system proxy (reqwest would read HTTP(S)_PROXY; aiohttp did not), no redirects followed
(routing/attempts.py `_redirect`), no cookies, gzip and deflate asked for and undone (as aiohttp did),
header names in lower case.
"""

from __future__ import annotations

from datetime import timedelta

from pyreqwest.client import Client, ClientBuilder

# A streamed response's head is handed over at once: with a buffer, pyreqwest would first wait for this
# many body bytes (or the end), which holds back a stream's first event (the first-byte timeout's job).
STREAM_BUFFER = 0

Timeouts = tuple[float, float, float | None]  # connect_s, first_byte_s, total_s


class ProviderPool:
    """A provider's clients, one per set of timeouts, made on first use and closed together."""

    def __init__(self, provider: str, max_connections: int) -> None:
        self.provider = provider
        self.max_connections = max_connections
        self._clients: dict[Timeouts, Client] = {}

    def client(self, timeouts: Timeouts) -> Client:
        found = self._clients.get(timeouts)
        if found is None:
            found = self._clients[timeouts] = _build(self.max_connections, timeouts)
        return found

    def any_client(self) -> Client:
        """A client of this provider for a call that sets its own total timeout (health probes)."""
        if self._clients:
            return next(iter(self._clients.values()))
        return self.client((5.0, 60.0, None))

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def _build(max_connections: int, timeouts: Timeouts) -> Client:
    connect_s, first_byte_s, total_s = timeouts
    builder = (
        ClientBuilder()
        .no_proxy()
        .follow_redirects(False)
        .referer(False)
        .gzip(True)
        .deflate(True)
        .brotli(False)
        .zstd(False)
        .http1_lower_case_headers()
        # pyreqwest would name itself (aiohttp's session sent no User-Agent): the gateway says what it is.
        .user_agent("multihome")
        .max_connections(max_connections)
        .pool_idle_timeout(timedelta(seconds=60))
        .connect_timeout(timedelta(seconds=connect_s))
        .read_timeout(timedelta(seconds=first_byte_s))
    )
    if total_s is not None:
        builder = builder.timeout(timedelta(seconds=total_s))
    return builder.build()


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
