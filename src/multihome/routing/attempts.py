"""Walk a plan: retry on the same deployment with jittered backoff, then fail over on a decline.

Client errors are returned at once; other declines fail over only when the group lists them in
`fail_over_on`; streams fail over only before their first byte reaches the client. Breakers and
latency statistics learn from every attempt. With `hedge_after_ms`, a slow first deployment is
raced against the next one and the loser is cancelled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import msgspec
from pyqwest import ReadError, RemoteProtocolError, WriteError

from ..config import ModelGroup
from ..providers.base import (
    CAPACITY,
    CLIENT_ERROR,
    CONTEXT_OVERFLOW,
    REFUSAL,
    UNAVAILABLE,
    UNSUPPORTED,
    UpstreamRequest,
)
from ..providers.gate import UNSENT, wait_permit
from ..providers.transport import UPSTREAM_ERRORS
from ..schema import header_text
from ..schema.errors import ApiError
from ..schema.peek import ResponsePeek, mended_peek, peek_decoder
from .breakers import CLOSED, Breakers
from .catalog import DeploymentRuntime, GroupRuntime
from .latency import LatencyStats
from .planner import Plan
from .stream_relay import StreamBroken, StreamRelay, close_call

# The front door's two halves of a call: its upstream request for a deployment, and the reading
# of a 2xx upstream body (with its headers) back into the client's schema.
Build = Callable[[DeploymentRuntime], Awaitable[UpstreamRequest]]
Translate = Callable[[DeploymentRuntime, bytes, Mapping[str, str]], bytes]

_UNWELL = frozenset({CAPACITY, UNAVAILABLE})  # what counts against a deployment's breaker
# Declines about the request, not the deployment: if nobody takes it, the client hears why.
_ABOUT_REQUEST = frozenset({CONTEXT_OVERFLOW, UNSUPPORTED, REFUSAL})
# A deployment a failover would go to is at its own rate limit (AttemptGate): passed over, as the planner
# passes over one admission found there (api/pipeline.py), with the same reason.
_LIMITED = "deployment_rate_limited"
LIMITED_REASON = "deployment rate limit reached"


class AttemptGate(Protocol):
    """A call's admission on the rate limits of each deployment it fails over to (accounting/tracker.py):
    admission counted the call on one deployment only (`admitted`); any other is admitted before it is
    called, and passed over when at its limit (`refusal`: the 429 to answer if nothing else serves). A
    retry on a deployment is admitted on its requests limit (`admit_retry`), and not made when at it."""

    admitted: set[str]
    refusal: ApiError | None

    async def admit(self, dep: DeploymentRuntime) -> bool: ...

    async def admit_retry(self, dep: DeploymentRuntime) -> bool: ...


class Attempt(msgspec.Struct):
    deployment: str
    outcome: str
    ms: float
    reason: str | None = None  # for skips: the planner's reason
    # An upstream answer this attempt got and the call did not serve, which the provider bills all the
    # same (a 200 refusal failed over from, a hedge's loser that completed): (its DeploymentRuntime, its
    # ResponsePeek). The call's accounting charges it (accounting/tracker.py `_unserved`).
    billed: Any = None

    def header(self) -> str:
        if self.reason is not None:
            # A reason may quote a tenant's policy description: one short quoted string, whatever it holds.
            reason = self.reason[:_MAX_REASON].replace("\\", "").replace('"', "'")
            return f'{self.deployment};outcome={self.outcome};reason="{reason}"'
        return f"{self.deployment};outcome={self.outcome};ms={self.ms:.1f}"


class _Unanswered:
    """What an attempt cancelled after its request was sent is billed with (`Attempt.billed`, in place of an
    answer's peek): no usage and no characters, so the call's accounting charges the prompt's estimate
    (accounting/tracker.py `_unserved`)."""

    __slots__ = ()
    usage = None
    content_chars = 0


UNANSWERED = _Unanswered()

_MAX_REASON = 200  # characters of one skip reason in the header (the call record keeps it whole)
_MAX_HEADER = 4096  # characters of the whole header; clients refuse response heads over 16 KiB


def attempts_header(attempts: list[Attempt]) -> str:
    """`x-multihome-attempts`: safe to write whatever deployment names and reasons hold."""
    text = attempts[0].header() if len(attempts) == 1 else ", ".join([a.header() for a in attempts])
    return header_text.text(text, _MAX_HEADER)


class Served(msgspec.Struct):
    """A 2xx answer (or a pass-through client error) and how it was reached."""

    deployment: DeploymentRuntime
    status: int
    attempts: list[Attempt]
    body: bytes = b""
    stream: StreamRelay | None = None
    first: bytes = b""
    dropped: list[str] | None = None
    peek: ResponsePeek | None = None  # the unary answer, read shallowly (usage, tool calls)


class _Result(msgspec.Struct):
    kind: str
    label: str
    retry_after: float | None = None
    status: int = 0
    body: bytes = b""
    stream: StreamRelay | None = None
    first: bytes = b""
    dropped: list[str] | None = None
    peek: ResponsePeek | None = None
    attempt: Attempt | None = None  # a billable refusal's attempt (`_one`), unmarked if it is served

    def discard(self) -> None:
        if self.stream is not None:
            self.stream.close()


class AllDeclined(ApiError):
    """Every deployment declined; carries the attempts so a fallback group can continue the story."""

    def __init__(self, err: ApiError, attempts: list[Attempt]) -> None:
        headers = {**err.headers, "x-multihome-attempts": attempts_header(attempts)}
        super().__init__(err.status, err.body.message, type=err.body.type, code=err.body.code, headers=headers)
        self.attempts = attempts


class AttemptRunner:
    def __init__(
        self,
        breakers: Breakers | None = None,
        latency: LatencyStats | None = None,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.breakers = breakers
        self.latency = latency
        self._sleep = sleep
        self._rand = rand

    def run(
        self,
        group: GroupRuntime,
        plan: Plan,
        build: Build,
        translate: Translate,
        *,
        stream: bool,
        forward_usage: bool = False,
        attempts: list[Attempt] | None = None,
        request_id: str | None = None,
    ) -> Awaitable[Served]:
        """Walk the plan. `await build(deployment) -> UpstreamRequest`; `translate(deployment, body, headers) -> bytes`
        turns a 2xx upstream body into the client's schema; `request_id` goes upstream as `x-request-id`.
        `plan.gate` (when set) admits a deployment the call's admission did not charge before it is called.
        Await it for Served, or an ApiError. (Not a coroutine itself: without a time budget the walk's is
        the only one.)"""
        walk = _Walk(
            self,
            group,
            group.policy,
            build,
            translate,
            stream,
            forward_usage,
            attempts if attempts is not None else [],
            request_id,
        )
        budget = group.policy.timeouts.budget_s
        if budget is None:
            return walk.run(plan)
        return self._budgeted(walk, group, plan, budget)

    async def _budgeted(self, walk: _Walk, group: GroupRuntime, plan: Plan, budget: float) -> Served:
        try:
            async with asyncio.timeout(budget):
                return await walk.run(plan)
        except TimeoutError:
            walk.attempts.append(Attempt("(budget)", "budget_exhausted", budget * 1000))
            raise _failed(group, plan, walk.attempts, None, budget_s=budget) from None

    def backoff(self, base_ms: int, retry: int, retry_after: float | None, cap_s: float) -> float | None:
        if retry_after is not None:
            # A Retry-After longer than the group tolerates means: try the next deployment now.
            return retry_after if retry_after <= cap_s else None
        delay: float = self._rand() * base_ms * (2**retry) / 1000  # int ** int is Any to mypy
        return delay


class _Walk(msgspec.Struct, eq=False):
    """One call's walk through a plan (a Struct: made in C, once per call)."""

    runner: AttemptRunner
    group: GroupRuntime
    policy: ModelGroup  # the group's
    build: Build
    translate: Translate
    stream: bool
    forward_usage: bool
    attempts: list[Attempt]
    request_id: str | None = None
    gate: AttemptGate | None = None  # the plan's (set by `run` only when there is one)
    last: _Result | None = None
    last_dep: DeploymentRuntime | None = None
    overflow_window: int | None = None

    async def run(self, plan: Plan) -> Served:
        queue = plan.ordered
        gate = plan.gate  # None unless some deployment has a rate limit of its own: then each attempt pays
        if gate is not None:
            self.gate = gate
        i = 0
        while i < len(queue):
            dep = queue[i]
            if self.overflow_window is not None and self._too_small(dep):
                i += 1
                continue
            partner = self._hedge_partner(queue, i) if self.policy.hedge_after_ms is not None else None
            if partner is not None:
                result, served_by = await self._hedged(dep, partner)
                i += 2
            elif gate is not None and dep.name not in gate.admitted and not await gate.admit(dep):
                # A failover to a deployment at its own rate limit (the deployment admission charged is in
                # `admitted`: the first attempt pays no more than that look-up): it is not called.
                result, served_by = self._limited(dep), dep
                i += 1
            else:
                result, served_by = await self._with_retries(dep), dep
                i += 1
            if result.kind == "ok":
                return self._served(served_by, result)
            if result.kind == _LIMITED:  # not called: nothing to decide
                continue
            decision = self._decide(served_by, result)
            if decision is not None:
                return decision
        last = self.last
        if last is not None and last.kind in _ABOUT_REQUEST and last.status and self.last_dep is not None:
            return self._answer(self.last_dep, last)
        raise _failed(self.group, plan, self.attempts, self.last)

    def _too_small(self, dep: DeploymentRuntime) -> bool:
        if (
            self.overflow_window is not None
            and dep.context_window is not None
            and dep.context_window <= self.overflow_window
        ):
            self.attempts.append(Attempt(dep.name, "skipped_window_too_small", 0.0))
            return True
        return False

    def _hedge_partner(self, queue: Sequence[DeploymentRuntime], i: int) -> DeploymentRuntime | None:
        if self.policy.hedge_after_ms is None:
            return None
        for dep in queue[i + 1 :]:
            if not self._too_small_silent(dep):
                return dep if dep is queue[i + 1] else None
        return None

    def _too_small_silent(self, dep: DeploymentRuntime) -> bool:
        return (
            self.overflow_window is not None
            and dep.context_window is not None
            and dep.context_window <= self.overflow_window
        )

    def _served(self, dep: DeploymentRuntime, result: _Result) -> Served:
        return Served(
            dep, result.status, self.attempts, result.body, result.stream, result.first, result.dropped, result.peek
        )

    def _answer(self, dep: DeploymentRuntime, result: _Result) -> Served:
        """A decline's upstream answer served as it is: a refusal served is the call's own answer (charged
        as the call, with its usage), no longer an unserved one."""
        attempt = result.attempt
        if attempt is not None:
            attempt.billed = None
        return Served(dep, result.status, self.attempts, result.body, peek=result.peek)

    def _lost_hedge(self, dep: DeploymentRuntime, result: _Result) -> None:
        """A hedge's loser that completed anyway: the upstream bills it, so its attempt carries it for
        the call's accounting (a unary answer's usage; a stream is closed, its output unknown: its prompt)."""
        result.discard()
        if result.kind != "ok":
            return
        for attempt in reversed(self.attempts):
            if attempt.deployment == dep.name and attempt.outcome == "ok" and attempt.billed is None:
                attempt.outcome = "hedge_lost"
                attempt.billed = (dep, result.peek if result.peek is not None else UNANSWERED)
                return

    def _decide(self, dep: DeploymentRuntime, result: _Result) -> Served | None:
        """After a deployment gave up: answer the client now (Served), or go on (None)."""
        self.last, self.last_dep = result, dep
        if result.kind == CLIENT_ERROR:
            return Served(dep, result.status, self.attempts, result.body)
        if result.kind not in self.policy.fail_over_on:
            if result.status:
                # Not a decline this group fails over on: the client gets the upstream answer.
                return self._answer(dep, result)
            raise _failed(self.group, None, self.attempts, result)
        if result.kind == CONTEXT_OVERFLOW and dep.context_window is not None:
            self.overflow_window = max(self.overflow_window or 0, dep.context_window)
        return None

    def _limited(self, dep: DeploymentRuntime) -> _Result:
        """`dep` is at its own rate limit: passed over, not called."""
        self.attempts.append(Attempt(dep.name, "skipped", 0.0, LIMITED_REASON))
        return _Result(_LIMITED, "skipped")

    async def _gated(self, dep: DeploymentRuntime) -> _Result:
        """`_with_retries` for a hedge's deployment, once admitted on its own rate limits."""
        gate = self.gate
        if gate is not None and dep.name not in gate.admitted and not await gate.admit(dep):
            return self._limited(dep)
        return await self._with_retries(dep)

    async def _with_retries(self, dep: DeploymentRuntime) -> _Result:
        result = _Result(UNAVAILABLE, "breaker_open")
        for retry in range(self.policy.retries + 1):
            result = await self._one(dep)
            # Only a deployment that is unwell is worth asking again, and only if the group
            # treats that as a decline at all.
            if result.kind not in _UNWELL or result.kind not in self.policy.fail_over_on:
                return result
            if retry == self.policy.retries or result.label == "breaker_open":
                return result
            delay = self.runner.backoff(
                self.policy.backoff_ms, retry, result.retry_after, self.policy.max_retry_after_s
            )
            if delay is None:
                return result
            await self.runner._sleep(delay)
            gate = self.gate
            if gate is not None and not await gate.admit_retry(dep):
                # A retry is another upstream call: not made to a deployment at its own requests limit.
                self.attempts.append(Attempt(dep.name, "skipped", 0.0, LIMITED_REASON))
                return result
        return result

    async def _one(self, dep: DeploymentRuntime) -> _Result:
        breakers = self.runner.breakers
        # A closed breaker admits every call (both kinds): only another state needs admit's coroutine.
        if breakers is not None and breakers.get(dep.name).state != CLOSED and not await breakers.admit(dep.name):
            self.attempts.append(Attempt(dep.name, "breaker_open", 0.0))
            return _Result(UNAVAILABLE, "breaker_open")
        t0 = time.perf_counter()
        try:
            req = await self.build(dep)
        except asyncio.CancelledError:
            self._cancelled(dep, t0, sent=False)
            raise
        try:
            if self.request_id is not None:
                req.headers = {**req.headers, "x-request-id": self.request_id}
            if self.stream:
                result = await _stream_once(dep, self.group, req, self.forward_usage, t0)
            else:
                result = await _unary_once(dep, self.group, req, self.translate, t0)
        except asyncio.CancelledError as exc:
            self._cancelled(dep, t0, sent=exc.args != (UNSENT,))  # sent unless it waited for a connection
            raise
        ms = (time.perf_counter() - t0) * 1000
        self.attempts.append(Attempt(dep.name, result.label, ms))
        if breakers is not None:
            breakers.record(dep.name, result.kind not in _UNWELL)
        if result.kind == "ok" and self.runner.latency is not None:
            self.runner.latency.observe(dep.name, ms, stream=self.stream)
        if result.kind == "ok":
            result.dropped = req.dropped or None
        elif result.peek is not None:
            # A refusal the upstream answered (and billed, usage and all), or a request sent and timed out
            # (UNANSWERED: the provider bills the prompt it read): the call is charged for it unless it is
            # the answer served (`_answer`).
            attempt = self.attempts[-1]
            attempt.billed = (dep, result.peek)
            result.attempt = attempt
        return result

    def _cancelled(self, dep: DeploymentRuntime, t0: float, *, sent: bool) -> None:
        """An attempt cancelled before its answer: a hedge it lost, or the call's end (the client went away, the
        routing budget, a drain). One whose request was sent is billed by the provider (its prompt at least,
        read as it arrived): the call's accounting charges the prompt's estimate (`UNANSWERED`)."""
        breakers = self.runner.breakers
        if breakers is not None:  # the breaker must not stay half-open
            breakers.get(dep.name).probing = False
        attempt = Attempt(dep.name, "cancelled", (time.perf_counter() - t0) * 1000)
        if sent:
            attempt.billed = (dep, UNANSWERED)
        self.attempts.append(attempt)

    async def _hedged(self, first: DeploymentRuntime, second: DeploymentRuntime) -> tuple[_Result, DeploymentRuntime]:
        """Race `first` against `second`, which starts only if `first` is slow. The loser is cancelled."""
        after_ms = self.policy.hedge_after_ms
        assert after_ms is not None  # _hedge_partner pairs deployments only when it is set
        hop = self._with_retries if self.gate is None else self._gated  # no coroutine more without a gate
        a = asyncio.create_task(hop(first))
        try:
            done, _ = await asyncio.wait({a}, timeout=after_ms / 1000)
        except BaseException:  # the call was cancelled (its client hung up): so is the first deployment's call
            a.cancel()
            await self._stopped({a: first})
            raise
        if done:
            result = a.result()
            if result.kind == "ok" or self._decide_peek(first, result):
                return result, first
            return await hop(second), second
        b = asyncio.create_task(hop(second))
        owners = {a: first, b: second}
        pending = {a, b}
        fallback: tuple[_Result, DeploymentRuntime] | None = None
        won: tuple[_Result, DeploymentRuntime] | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    result = task.result()
                    if result.kind == "ok":
                        if won is None:
                            won = (result, owners[task])
                        else:  # both answered at once: the other is a loser the upstream bills
                            self._lost_hedge(owners[task], result)
                    elif fallback is None or fallback[0].kind == _LIMITED or self._decide_peek(owners[task], result):
                        fallback = (result, owners[task])
                if won is not None:
                    return won
            assert fallback is not None  # both finished, neither ok: the loop kept one
            return fallback
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await self._stopped({task: owners[task] for task in pending}, won)

    async def _stopped(
        self,
        cancelled: dict[asyncio.Task[_Result], DeploymentRuntime],
        won: tuple[_Result, DeploymentRuntime] | None = None,
    ) -> None:
        """Wait for the cancelled attempts to end (each records its attempt before the call's record is made);
        one that answered as the cancel came is billed, so charged. A cancel of the call itself meanwhile (its
        client hung up) is raised once they have ended: taken for theirs and dropped, the call went on. The
        answer that `won` the race is then not served: billed by its provider, it is charged as a loser's."""
        hung_up = False
        while True:
            try:
                await asyncio.wait(cancelled)
                break
            except asyncio.CancelledError:
                hung_up = True
        for task, dep in cancelled.items():
            if not task.cancelled() and task.exception() is None:
                self._lost_hedge(dep, task.result())
        if hung_up:
            if won is not None:
                self._lost_hedge(won[1], won[0])
            raise asyncio.CancelledError

    def _decide_peek(self, dep: DeploymentRuntime, result: _Result) -> bool:
        """Whether this result would end the walk (so it must be the one reported)."""
        return result.kind == CLIENT_ERROR or (result.kind not in self.policy.fail_over_on and bool(result.status))


async def _unary_once(
    dep: DeploymentRuntime, group: GroupRuntime, req: UpstreamRequest, translate: Translate, t0: float
) -> _Result:
    """One upstream request. `t0`: when the attempt began (perf_counter), which tells a timeout of the
    connect from one of the answer (`_timed_out`)."""
    try:
        if req.fan_out:
            status, headers, body = await _post_fanned(dep, group, req)
        else:  # _post, inline: one coroutine less per call (the client follows no redirect: see _redirect)
            client, gate = group.clients[dep.name]
            if not gate.take():
                try:
                    await wait_permit(gate, group.timeouts[2])
                except TimeoutError:  # no connection of the pool came free: nothing was sent
                    return _Result(UNAVAILABLE, "timeout")
                t0 = time.perf_counter()  # the request starts now
            try:
                resp = await client.post(req.url, req.headers, req.body)
            finally:
                gate.give()  # the answer is read whole (or the call is over): its connection is free
            status, headers, body = resp.status, resp.headers, resp.content  # type: ignore[assignment]  # pyqwest's Headers: a case-insensitive str mapping, not registered as one
    except TimeoutError:  # pyqwest's timeouts (connect, first byte or a later gap, total) are TimeoutErrors
        return _timed_out(group, t0)
    except UPSTREAM_ERRORS as exc:
        return _Result(UNAVAILABLE, _conn_label(exc))
    if 300 <= status < 400:
        return _redirect(status)
    if status < 300:
        try:
            body = translate(dep, body, headers)
            try:
                peek = peek_decoder.decode(body)
            except msgspec.DecodeError as exc:  # a tool call's arguments as an object, from a lenient server?
                body, peek = mended_peek(body, exc)
        except (msgspec.DecodeError, ValueError):
            return _Result(UNAVAILABLE, "malformed_response")
        if dep.adapter.is_refusal(peek):
            return _Result(REFUSAL, "content_filter", status=status, body=body, peek=peek)
        return _Result("ok", "ok", status=status, body=body, peek=peek)
    c = dep.adapter.classify_error(status, headers, body)
    return _Result(c.kind, c.label, c.retry_after, status, body)


async def _post(
    dep: DeploymentRuntime, group: GroupRuntime, url: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, Mapping[str, str], bytes]:
    client, gate = group.clients[dep.name]
    if not gate.take():
        await wait_permit(gate, group.timeouts[2])
    try:
        resp = await client.post(url, headers, body)  # the client follows no redirect: see _redirect
    finally:
        gate.give()
    return resp.status, resp.headers, resp.content  # type: ignore[return-value]  # pyqwest's Headers: a case-insensitive str mapping, not registered as one


# How many pieces of one fanned-out call are in flight at once: enough to hide latency, few enough
# not to trip the upstream's per-minute request quota with one client call.
FAN_OUT_CONCURRENCY = 8


async def _post_fanned(
    dep: DeploymentRuntime, group: GroupRuntime, req: UpstreamRequest
) -> tuple[int, Mapping[str, str], bytes]:
    """Post every piece of a fanned-out call; the first piece that is not a 2xx answers for the call
    (the others are still awaited, never leaked), else the adapter's join of every answer in order."""
    gate = asyncio.Semaphore(FAN_OUT_CONCURRENCY)

    async def one(body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        async with gate:
            return await _post(dep, group, req.url, body, req.headers)

    answers = await asyncio.gather(*(one(b) for b in req.fan_out), return_exceptions=True)
    done: list[tuple[int, Mapping[str, str], bytes]] = []
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer  # a timeout or connection error of one piece is the call's
        if answer[0] >= 300:
            return answer
        done.append(answer)
    assert req.join is not None  # an adapter that fans out joins (UpstreamRequest.fan_out)
    try:
        joined = req.join([a[2] for a in done])
    except (msgspec.DecodeError, ValueError):
        joined = b""  # a piece that is not the upstream's JSON: translating b"" reports malformed_response
    return 200, done[0][1], joined


async def _stream_once(
    dep: DeploymentRuntime, group: GroupRuntime, req: UpstreamRequest, forward_usage: bool, t0: float
) -> _Result:
    client, gate = group.clients[dep.name]
    # The permit is held until the stream's connection is free again: its end read, or its close done.
    if not gate.take():
        try:
            await wait_permit(gate, group.timeouts[2])
        except TimeoutError:
            return _Result(UNAVAILABLE, "timeout")
        t0 = time.perf_counter()  # the request starts now
    try:  # the client follows no redirect: see _redirect
        resp = await client.stream("POST", req.url, req.headers, req.body)
    except TimeoutError:
        gate.give()
        return _timed_out(group, t0)
    except UPSTREAM_ERRORS as exc:
        gate.give()
        return _Result(UNAVAILABLE, _conn_label(exc))
    except BaseException:  # cancelled before the head (its request is aborted), or anything else
        gate.give()
        raise
    if 300 <= resp.status < 400:
        close_call(resp, gate)
        return _redirect(resp.status)
    if resp.status >= 300:
        try:
            body = b"".join([bytes(chunk) async for chunk in resp.content])
        except (*UPSTREAM_ERRORS, TimeoutError):
            body = b""
        finally:
            close_call(resp, gate)  # also when cancelled while reading the error body
        headers: Mapping[str, str] = resp.headers  # type: ignore[assignment]  # pyqwest's Headers: a case-insensitive str mapping, not registered as one
        c = dep.adapter.classify_error(resp.status, headers, body)
        return _Result(c.kind, c.label, c.retry_after, resp.status, body)
    relay = StreamRelay(resp, dep.adapter, dep.upstream_model, dep.name, forward_usage, req.stream_decoder, gate)
    try:
        first = await relay.first()
    except StreamBroken as exc:
        relay.close()
        if exc.label == "timeout":  # the head came, its first event did not: the request was read, and is billed
            return _Result(UNAVAILABLE, "timeout", peek=UNANSWERED)  # type: ignore[arg-type]
        return _Result(UNAVAILABLE, exc.label)
    except BaseException:
        relay.close()
        raise
    return _Result("ok", "ok", status=200, stream=relay, first=first)


def _timed_out(group: GroupRuntime, t0: float) -> _Result:
    """An attempt that pyqwest timed out. Sent, it is billed by its provider (the prompt it read) and carries
    that for the call's accounting (UNANSWERED, as a request cancelled once sent); timed out while it
    connected, nothing was sent. pyqwest raises the same TimeoutError, with the same words, for its connect,
    read and total timeouts, so the time tells them apart: a read timeout comes no sooner than `first_byte_s`
    after the request began, a total one no sooner than `total_s`; one sooner than both was the connect's.
    (With `connect_s` at or past the sooner of the two a connect timeout cannot be told apart: charged.)"""
    _, first_byte_s, total_s = group.timeouts
    least = first_byte_s if total_s is None else min(first_byte_s, total_s)
    if time.perf_counter() - t0 < least - _TIMER_SLACK_S:
        return _Result(UNAVAILABLE, "timeout")
    return _Result(UNAVAILABLE, "timeout", peek=UNANSWERED)  # type: ignore[arg-type]


# How much sooner than its deadline a timer of pyqwest's (Tokio's) may be seen to fire, measured from before the
# request was handed to it: none (both clocks are the monotonic one); a millisecond for rounding.
_TIMER_SLACK_S = 0.001


def _redirect(status: int) -> _Result:
    """An upstream redirect is not followed: the gateway calls only the addresses its config names,
    and following would also hand the provider key (api-key, x-api-key, x-goog-api-key: headers an
    HTTP client may keep across origins) to whatever the Location names. The deployment is unavailable."""
    return _Result(UNAVAILABLE, f"http_{status}")


def _conn_label(exc: Exception) -> str:
    if isinstance(exc, RemoteProtocolError) and _CLOSED_EARLY in str(exc):
        # hyper's words for a connection the upstream closed before its answer's end (aiohttp's
        # ServerDisconnectedError); pyqwest has no class of its own for it.
        return "disconnected"
    if isinstance(exc, (ConnectionError, ReadError, WriteError)):
        return "connection_error"
    return "upstream_error"


_CLOSED_EARLY = "connection closed before message completed"


# Attempts' outcomes of a deployment not called (routing/router.py adds the planner's skips and the fallback mark).
NOT_CALLED = frozenset({"breaker_open", "skipped", "skipped_window_too_small", "fallback_group"})


def _failed(
    group: GroupRuntime, plan: Plan | None, attempts: list[Attempt], last: _Result | None, budget_s: float | None = None
) -> AllDeclined:
    tried = "; ".join(
        f"{a.deployment}: {a.outcome} ({a.reason})" if a.reason else f"{a.deployment}: {a.outcome} after {a.ms:.0f} ms"
        for a in attempts
    )
    parts = [f"No deployment of model '{group.name}' could serve the request."]
    if budget_s is not None:
        parts.append(f"The time budget of {budget_s:g}s ran out.")
    if tried:
        parts.append(f"Tried: {tried}.")
    skipped = "; ".join(f"{s.deployment}: {s.reason}" for s in plan.skipped) if plan is not None else ""
    if skipped:
        parts.append(f"Skipped: {skipped}.")
    # The deployments called: not a breaker that stood open, nor one passed over (at its own rate limit, for what
    # the request needs, by policy: the answer is the one the call would get without it, docs/routing.md), nor
    # the mark of a fallback group the walk went on to.
    real = [a for a in attempts if a.outcome not in NOT_CALLED]
    if budget_s is not None:
        err = ApiError(504, " ".join(parts), type="server_error", code="routing_budget_exhausted")
    elif real and all(a.outcome == "http_429" for a in real) and last is not None:
        headers = {"retry-after": _retry_after(last.retry_after)}
        err = ApiError(429, " ".join(parts), type="rate_limit_error", code="all_deployments_throttled", headers=headers)
    else:
        err = ApiError(503, " ".join(parts), type="server_error", code="all_deployments_failed")
    return AllDeclined(err, attempts)


_MAX_RETRY_AFTER_S = 86400


def _retry_after(seconds: float | None) -> str:
    """Whole seconds for the client's Retry-After, whatever the upstream sent (`1e400` reads as inf)."""
    if seconds is None or not seconds >= 1:  # also NaN
        return "1"
    return str(round(min(seconds, _MAX_RETRY_AFTER_S)))
