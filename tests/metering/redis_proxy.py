"""A TCP proxy on loopback in front of a test Redis, for tests that lose, hold or cut what passes
between the gateway and Redis. `relay` decides what each chunk becomes: passed on (as is or changed),
swallowed (b""), or CUT (both sides of that connection closed)."""

from __future__ import annotations

import asyncio
from typing import Any

CUT = object()  # close the client's connection and its upstream one


class RedisProxy:
    def __init__(self, port: int) -> None:
        self.port = port  # where new connections go (a test may move it, as a DNS name moves)
        self.writers: list = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def relay(self, data: bytes, replies: bool, conn: dict[str, Any]) -> bytes | object:
        """What to pass on of `data` (`replies`: from Redis); `conn`: this connection's own state."""
        return data

    async def _serve(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_w]
        conn: dict[str, Any] = {}

        async def pump(src, dst, replies: bool) -> None:
            try:
                while data := await src.read(65536):
                    out = await self.relay(data, replies, conn)
                    if out is CUT:
                        writer.close()
                        up_w.close()
                        return
                    if out:
                        dst.write(out)
                        await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_w, False), pump(up_r, writer, True))

    async def close(self) -> None:
        self.server.close()
        for w in self.writers:
            w.close()
        await asyncio.sleep(0.05)  # the pumps see their connections end
