"""One pooled aiohttp session per upstream provider, created once at start-up."""

from __future__ import annotations

import aiohttp


class Transport:
    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def open(self, provider: str, max_connections: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300, keepalive_timeout=60)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            # No default User-Agent/cookie work on the hot path; the gateway is not a browser.
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._sessions[provider] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
