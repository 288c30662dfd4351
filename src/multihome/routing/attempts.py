"""Walk a plan: retry on the same deployment with jittered backoff, then fail over on a decline.

Client errors are returned at once; content-filter refusals fail over only when the group
says so; streams fail over only before their first byte reaches the client.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import aiohttp
import msgspec

from ..providers.base import CAPACITY, CLIENT_ERROR, REFUSAL, UNAVAILABLE, Classified, UpstreamRequest
from ..schema.errors import ApiError
from ..schema.peek import peek_decoder
from .catalog import DeploymentRuntime, GroupRuntime
from .planner import Plan
from .stream_relay import StreamBroken, StreamRelay


@dataclass(slots=True)
class Attempt:
    deployment: str
    outcome: str
    ms: float

    def header(self) -> str:
        return f"{self.deployment};outcome={self.outcome};ms={self.ms:.1f}"


def attempts_header(attempts: list[Attempt]) -> str:
    return ", ".join(a.header() for a in attempts)


@dataclass(slots=True)
class Served:
    """A 2xx answer (or a pass-through client error) and how it was reached."""

    deployment: DeploymentRuntime
    status: int
    attempts: list[Attempt]
    body: bytes = b""
    stream: StreamRelay | None = None
    first: bytes = b""
    dropped: list[str] | None = None


@dataclass(slots=True)
class _Result:
    kind: str
    label: str
    retry_after: float | None = None
    status: int = 0
    body: bytes = b""
    stream: StreamRelay | None = None
    first: bytes = b""


class AttemptRunner:
    def __init__(self, *, sleep=asyncio.sleep, rand=random.random) -> None:
        self._sleep = sleep
        self._rand = rand

    async def run(
        self, group: GroupRuntime, plan: Plan, build, translate, *, stream: bool, forward_usage: bool = False
    ) -> Served:
        """Walk the plan. `await build(deployment) -> UpstreamRequest`; `translate(deployment, body) -> bytes`
        turns a 2xx upstream body into the client's schema. Returns Served or raises ApiError."""
        policy = group.policy
        attempts: list[Attempt] = []
        last: _Result | None = None
        for dep in plan.ordered:
            for retry in range(policy.retries + 1):
                t0 = time.perf_counter()
                req = await build(dep)
                if stream:
                    result = await self._stream_once(dep, group, req, forward_usage)
                else:
                    result = await self._unary_once(dep, group, req, translate)
                attempts.append(Attempt(dep.name, result.label, (time.perf_counter() - t0) * 1000))
                if result.kind == "ok":
                    return Served(dep, result.status, attempts, result.body, result.stream, result.first, req.dropped)
                last = result
                if result.kind == CLIENT_ERROR:
                    return Served(dep, result.status, attempts, result.body)
                if result.kind not in policy.fail_over_on:
                    if result.status:
                        # Not a decline this group fails over on: the client gets the upstream answer.
                        return Served(dep, result.status, attempts, result.body)
                    raise _all_failed(group, plan, attempts, last)
                if result.kind == REFUSAL or retry == policy.retries:
                    break
                delay = self._backoff(policy.backoff_ms, retry, result.retry_after, policy.max_retry_after_s)
                if delay is None:
                    break
                await self._sleep(delay)
        raise _all_failed(group, plan, attempts, last)

    def _backoff(self, base_ms: int, retry: int, retry_after: float | None, cap_s: float) -> float | None:
        if retry_after is not None:
            # A Retry-After longer than the group tolerates means: try the next deployment now.
            return retry_after if retry_after <= cap_s else None
        return self._rand() * base_ms * (2**retry) / 1000

    async def _unary_once(self, dep: DeploymentRuntime, group: GroupRuntime, req: UpstreamRequest, translate) -> _Result:
        try:
            resp = await dep.session.post(req.url, data=req.body, headers=req.headers, timeout=group.unary_timeout)
            body = await resp.read()
        except (TimeoutError, asyncio.TimeoutError):
            return _Result(UNAVAILABLE, "timeout")
        except aiohttp.ClientError as exc:
            return _Result(UNAVAILABLE, _conn_label(exc))
        if resp.status < 300:
            try:
                body = translate(dep, body)
                peek = peek_decoder.decode(body)
            except (msgspec.DecodeError, ValueError):
                return _Result(UNAVAILABLE, "malformed_response")
            if dep.adapter.is_refusal(peek):
                return _Result(REFUSAL, "content_filter", status=resp.status, body=body)
            return _Result("ok", "ok", status=resp.status, body=body)
        c: Classified = dep.adapter.classify_error(resp.status, resp.headers, body)
        return _Result(c.kind, c.label, c.retry_after, resp.status, body)

    async def _stream_once(
        self, dep: DeploymentRuntime, group: GroupRuntime, req: UpstreamRequest, forward_usage: bool
    ) -> _Result:
        try:
            resp = await dep.session.post(req.url, data=req.body, headers=req.headers, timeout=group.stream_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            return _Result(UNAVAILABLE, "timeout")
        except aiohttp.ClientError as exc:
            return _Result(UNAVAILABLE, _conn_label(exc))
        if resp.status >= 300:
            try:
                body = await resp.read()
            except (aiohttp.ClientError, TimeoutError, asyncio.TimeoutError):
                body = b""
            c = dep.adapter.classify_error(resp.status, resp.headers, body)
            return _Result(c.kind, c.label, c.retry_after, resp.status, body)
        relay = StreamRelay(resp, dep.adapter, dep.upstream_model, dep.name, forward_usage)
        try:
            first = await relay.first()
        except StreamBroken as exc:
            relay.close()
            return _Result(UNAVAILABLE, exc.label)
        except BaseException:
            relay.close()
            raise
        return _Result("ok", "ok", status=200, stream=relay, first=first)


def _conn_label(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return "connection_error"
    return "upstream_error"


def _all_failed(group: GroupRuntime, plan: Plan, attempts: list[Attempt], last: _Result | None) -> ApiError:
    tried = "; ".join(f"{a.deployment}: {a.outcome} after {a.ms:.0f} ms" for a in attempts)
    skipped = "; ".join(f"{s.deployment}: {s.reason}" for s in plan.skipped)
    parts = [f"No deployment of model '{group.name}' could serve the request."]
    if tried:
        parts.append(f"Tried: {tried}.")
    if skipped:
        parts.append(f"Skipped: {skipped}.")
    only_capacity = bool(attempts) and last is not None and all(a.outcome == "http_429" for a in attempts)
    if only_capacity:
        headers = {"retry-after": str(max(1, round(last.retry_after or 1)))}
        return ApiError(429, " ".join(parts), type="rate_limit_error", code="all_deployments_throttled", headers=headers)
    return ApiError(503, " ".join(parts), type="server_error", code="all_deployments_failed")
