"""The MCP sessions one agent run holds open: one per server, opened on first use, closed when the run ends.

    sessions = Sessions(limits)
    tools = await sessions.use(endpoint, lambda s: s.list_tools())
    out = await sessions.use(endpoint, lambda s: s.call_tool("add", {"a": 1}))
    await sessions.close()

Opening a session (connect, `initialize`) costs tens of milliseconds with the SDK, more than a model
step's own orchestration, so a run opens it once per server, not once per call. Each session lives in
a task of its own that owns the SDK's context (its task groups and cancel scopes must be entered and
left in one task), and serves the run's requests in order. A session that failed (the server went
away, a protocol error) is dropped, and the next use opens a new one; a tool call that timed out
leaves it usable. Nothing is held beyond the run: a run resumed on another replica opens its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .egress import EgressPolicy
from .model import McpEndpoint

T = TypeVar("T")
Work = Callable[[Any], Awaitable[Any]]  # given the open McpSession


class _Held:
    def __init__(self, endpoint: McpEndpoint, limits: Any) -> None:
        self.inbox: asyncio.Queue[tuple[Work, asyncio.Future[Any]] | None] = asyncio.Queue()
        self.closing = False  # failed, and being closed: takes no more work
        self.task = asyncio.create_task(self._hold(endpoint, limits), name=f"mcp-session-{endpoint.name}")

    async def _hold(self, endpoint: McpEndpoint, limits: Any) -> None:
        from .mcp_client import McpFailure, McpToolTimeout, connect

        job: tuple[Work, asyncio.Future[Any]] | None = None
        try:
            async with connect(endpoint, limits) as session:
                while True:
                    job = await self.inbox.get()
                    if job is None:
                        return
                    work, done = job
                    try:
                        result = await work(session)
                    except McpToolTimeout as exc:  # the session stays usable
                        if not done.done():
                            done.set_exception(exc)
                        continue
                    except McpFailure as exc:
                        # The session is over. Whoever waits hears it now, not once the server has let the
                        # session end (the SDK's DELETE): a server that dripped that answer held the run.
                        self.closing = True
                        if not done.done():
                            done.set_exception(exc)
                        job = None
                        self._fail_waiting(exc)
                        raise
                    if not done.done():
                        done.set_result(result)
                    job = None
        except BaseException as exc:  # the session failed (or could not open): whoever waits hears why
            if job is not None and not job[1].done():
                job[1].set_exception(exc if isinstance(exc, Exception) else RuntimeError("MCP session closed"))
            self._fail_waiting(exc)
            if not isinstance(exc, Exception):
                raise

    def _fail_waiting(self, exc: BaseException) -> None:
        while not self.inbox.empty():
            job = self.inbox.get_nowait()
            if job is not None and not job[1].done():
                job[1].set_exception(exc if isinstance(exc, Exception) else RuntimeError("MCP session closed"))


class Sessions:
    def __init__(self, limits: Any = None, egress: EgressPolicy | None = None) -> None:
        self.limits = limits  # mcp_client.McpLimits; None: its defaults, with `egress` (the config's `egress:`)
        self.egress = egress
        self._held: dict[str, _Held] = {}
        self._closing: list[_Held] = []

    def _limits(self) -> Any:
        if self.limits is None:  # made at first use: the SDK is imported only when a server is called
            from .mcp_client import McpLimits

            self.limits = McpLimits(egress=self.egress) if self.egress is not None else McpLimits()
        return self.limits

    async def use(self, endpoint: McpEndpoint, work: Callable[[Any], Awaitable[T]]) -> T:
        """`work(session)` on the endpoint's session (opened now if there is none, or it failed)."""
        held = self._held.get(endpoint.name)
        if held is None or held.task.done() or held.closing:
            if held is not None and not held.task.done():
                self._closing.append(held)  # still ending: close() waits for it, then cancels it
            held = self._held[endpoint.name] = _Held(endpoint, self._limits())
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        held.inbox.put_nowait((work, done))
        return await asyncio.shield(done)  # a cancelled caller does not cancel the session under others

    async def close(self) -> None:
        """End every session (their MCP sessions are closed in their own tasks)."""
        held, self._held = [*self._held.values(), *self._closing], {}
        self._closing = []
        for h in held:
            h.inbox.put_nowait(None)
        for h in held:
            try:
                await asyncio.wait_for(asyncio.shield(h.task), 5)
            except (TimeoutError, Exception):
                h.task.cancel()
                with contextlib.suppress(BaseException):
                    await h.task
