"""Graceful stop: what happens to the calls still open when the gateway is told to stop.

On SIGTERM or SIGINT uvicorn stops accepting connections, waits for the open ones up to its
`timeout_graceful_shutdown`, then cancels whatever is left: a stream is cut with no error event
(the client sees a truncated body) and the call is never recorded. The gateway therefore keeps its
own, earlier deadline (`server.drain_timeout_s`), started by the same signal: `/readyz` answers 503
at once, and at the deadline each stream still open ends with an error event the SDKs raise, and
each call still waiting for its answer gets a 503. Both are recorded like any other call (usage,
audit), so uvicorn finds nothing left to cancel and goes straight on to the lifespan shutdown that
writes the queued rows. With nothing open, the process exits as soon as uvicorn notices the signal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..schema.errors import ApiError

if TYPE_CHECKING:
    from .asgi import Receive, Send
    from .pipeline import Call

log = logging.getLogger("multihome.drain")

# uvicorn's own deadline comes this long after the gateway's: time for the calls cut at the
# deadline to write their last bytes. It only matters for a client that stopped reading.
BACKSTOP_S = 2.0
SHUTTING_DOWN = "gateway_shutting_down"


def uvicorn_timeout(drain_timeout_s: float) -> float:
    """`timeout_graceful_shutdown` for uvicorn: the gateway's deadline, then the backstop."""
    return drain_timeout_s + BACKSTOP_S


class Drain:
    """The calls in flight, and the deadline by which those still open are ended."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.draining = False  # the stop signal arrived: /readyz answers 503
        self.expired = False  # the deadline passed: what is still open is being ended
        self.on_signals = False  # set by whoever runs the app under uvicorn (`multihome serve`, demo)
        self._calls: dict[asyncio.Task[Any], Call] = {}  # request task -> its call
        self._ended: set[asyncio.Task[Any]] = set()  # tasks this drain cancelled at the deadline
        self._timer: asyncio.TimerHandle | None = None
        self._signalled = False  # a stop signal arrived (a second one hurries the drain)
        self._hurried = False  # ... and it did: what was open was ended before the deadline
        # The loop the calls run on, once one entered: asyncio.current_task() or get_running_loop() ask
        # for the running loop, and each ask is a getpid() system call (CPython checks it is not a fork's).
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """At lifespan start-up, inside uvicorn's serve(): begin draining on the signals that stop it.

        uvicorn installed its handlers (signal.signal) just before; ours runs first and chains to
        its handler, so both act on the same signal. uvicorn restores the handlers it replaced when
        it returns, which removes ours too.

        A second stop signal (SIGTERM or SIGINT) brings the deadline forward to now: what is still
        open is ended as at the deadline (error events, 503s, each recorded), then the queued rows are
        written and the process exits. It is not passed on: uvicorn takes a second SIGINT for "exit
        without the lifespan shutdown", which wrote no queued row, dropped open streams without an
        error event, logged tracebacks, and then hung on the threads nothing had stopped.
        """
        if not self.on_signals or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue  # not under uvicorn's handler: leave the signal alone

            def handler(signum: int, frame: Any, previous: Callable[[int, Any], Any] = previous) -> None:
                # A signal handler must not touch the loop's state: both run on the loop.
                if self._signalled:
                    loop.call_soon_threadsafe(self.hurry)
                    return
                self._signalled = True
                loop.call_soon_threadsafe(self.begin)
                previous(signum, frame)

            signal.signal(sig, handler)

    def begin(self) -> None:
        """Shutdown has begun: stop reporting ready, and end what is still open at the deadline."""
        if self.draining:
            return
        self.draining = True
        log.info("draining %d open call(s); what is still open in %gs will be ended", len(self._calls), self.timeout_s)
        self._timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expire)

    def hurry(self) -> None:
        """A second stop signal: end what is still open now rather than at the deadline."""
        self.begin()
        if self.expired:
            return
        log.warning("a second stop signal: ending %d open call(s) now, not at the drain deadline", len(self._calls))
        if self._timer is not None:
            self._timer.cancel()
        self._hurried = True
        self._expire()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def serve(
        self,
        handler: Callable[[Call, Receive, Send], Awaitable[None]],
        call: Call,
        receive: Receive,
        send: Send,
        refuse: Callable[[Call, Send, ApiError], Awaitable[None]],
    ) -> None:
        """Run one HTTP call; at the deadline, `refuse(call, send, err)` answers it if it had not started.
        (The gateway does the same inline, with `enter`, `ended` and `leave`: one coroutine less per call.)"""
        task = self.enter(call)
        if task is None:
            await refuse(call, send, self.error())
            return
        try:
            await handler(call, receive, send)
        except asyncio.CancelledError:
            if not self.ended(task):
                raise
            await self.refuse_ended(refuse, call, send)
        finally:
            self.leave(task)

    def enter(self, call: Call) -> asyncio.Task[Any] | None:
        """The call's task, registered as open until `leave`; None once the deadline passed (refuse it)."""
        if self.expired:
            return None
        loop = self.loop
        task = asyncio.current_task(loop) if loop is not None else None
        if task is None:  # the loop is not yet known (or the gateway now runs on another one)
            self.loop = asyncio.get_running_loop()
            task = asyncio.current_task(self.loop)
            assert task is not None
        self._calls[task] = call
        return task

    def leave(self, task: asyncio.Task[Any]) -> None:
        del self._calls[task]

    def ended(self, task: asyncio.Task[Any]) -> bool:
        """After a CancelledError: whether the deadline cancelled the call (it is uncancelled, to be refused)."""
        if task not in self._ended:
            return False
        task.uncancel()
        self._ended.discard(task)
        return True

    async def refuse_ended(
        self, refuse: Callable[[Call, Send, ApiError], Awaitable[None]], call: Call, send: Send
    ) -> None:
        try:
            await refuse(call, send, self.error())
        except Exception:
            pass  # the response had already started

    def _expire(self) -> None:
        self.expired = True
        reason = (
            "the gateway is shutting down and was told to stop at once (a second stop signal)"
            if self._hurried
            else f"the gateway is shutting down and its drain deadline ({self.timeout_s:g}s) passed"
        )
        for task, call in list(self._calls.items()):
            stream = call.stream  # set by the stream sender once the answer is streaming
            if stream is not None:
                stream.cut(reason, SHUTTING_DOWN)  # the stream writes its error event and ends normally
            else:
                # Recorded first, so the task's own clean-up does not take it for a client that left.
                _record_ended(call, self.error())
                self._ended.add(task)
                task.cancel()
        if self._calls and not self._hurried:
            log.warning("drain deadline (%gs) passed: ended %d open call(s)", self.timeout_s, len(self._calls))

    def error(self) -> ApiError:
        when = (
            "when told to stop at once (a second stop signal)"
            if self._hurried
            else f"at its drain deadline ({self.timeout_s:g}s)"
        )
        return ApiError(
            503,
            f"The gateway is shutting down and stopped this call {when}; retry the request.",
            type="server_error",
            code=SHUTTING_DOWN,
        )


class SseCut:
    """An SSE answer made of stored or run-produced events (api/responses/common.py `send_sse`: a background
    response's stream, a foreground agent run's) as the drain deadline sees it: `cut` stops the sending task
    where it waits (a poll of the store, a model step, a tool call) and it ends the answer with the events
    `closing(reason, code)` gives, a body ended as HTTP wants, not cut off in the middle of its chunks.
    `done` once the answer's terminal event was sent: nothing is cut then (an error event after
    response.completed would say a completed response failed), as `StreamRelay.cut`."""

    __slots__ = ("_task", "reason", "code", "done")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self._task = task
        self.reason: str | None = None
        self.code = SHUTTING_DOWN
        self.done = False

    def cut(self, reason: str, code: str) -> None:
        if self.reason is None and not self.done:
            self.reason, self.code = reason, code
            self._task.cancel()

    def took(self, task: asyncio.Task[Any]) -> bool:
        """After a CancelledError in the sending task: whether it was this cut's (then it is uncancelled)."""
        if self.reason is None:
            return False
        task.uncancel()
        return True


def _record_ended(call: Call, err: ApiError) -> None:
    """An upstream may already be working on the call: record it like a call its client abandoned
    (accounting.tracker.settle): one an upstream has answered (waiting for its start to be durable, say)
    is charged for what it produced, as every answered call is, whatever becomes of the answer."""
    tracker = call.tracker
    if tracker is None:
        return
    served = tracker.served
    if served is not None:
        tracker.finish_produced(served, err.status, "cancelled", error_code=err.body.code)
    else:
        tracker.finish(err.status, "cancelled", error_code=err.body.code)
