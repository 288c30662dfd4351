"""A request to an ASGI app in process, over raw ASGI, that stays open until the test lets it go: httpx's
ASGITransport hands back a streamed answer only once it has ended, and an answer that never ends (a follower
of a run that hangs) is what some tests need to hold.

    client = AsgiClient(app, key, "GET", "/v1/responses/resp_1?stream=true")
    assert await client.status() == 200
    await client.events(3)      # three SSE events in
    await client.leave()        # the client disconnects; the app's task ends
"""

from __future__ import annotations

import asyncio
import contextlib
import json


class AsgiClient:
    """One request to the app over ASGI, left open until `leave` (the client disconnects)."""

    def __init__(
        self, app, key: str, method: str, path: str, body: dict | None = None, *, body_held: bool = False
    ) -> None:
        self.started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.body = bytearray()
        self._gone = asyncio.Event()
        self._request = json.dumps(body).encode() if body is not None else b""
        self._body_held = body_held  # the body never arrives (a client that sends its headers, then stalls)
        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(b"host", b"gw"), (b"authorization", f"Bearer {key}".encode())]
            + ([(b"content-type", b"application/json")] if body is not None else []),
            "client": ("127.0.0.1", 1),
            "server": ("gw", 80),
        }
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict:
        if self._request is not None and not self._body_held:
            request, self._request = self._request, None
            return {"type": "http.request", "body": request, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict) -> None:
        if message["type"] == "http.response.start" and not self.started.done():
            self.started.set_result(message["status"])
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def status(self) -> int:
        return await asyncio.wait_for(asyncio.shield(self.started), 30)

    async def events(self, count: int) -> None:
        for _ in range(600):
            if self.body.count(b"\n\n") >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"fewer than {count} events: {bytes(self.body)[:300]!r}")

    async def ended(self) -> None:
        """The app answered and returned (a refusal: nothing left open)."""
        await asyncio.wait_for(self.task, 30)

    async def cancel(self) -> None:
        """The call's task cancelled, as the server cancels it when its client hangs up mid-call."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 30)

    async def leave(self) -> None:
        self._gone.set()
        await asyncio.wait_for(self.task, 30)
