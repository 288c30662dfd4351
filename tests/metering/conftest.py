"""Helpers for metering tests: real CallRecords, plan stand-ins, a real redis-server."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for e2e.services
from e2e.services import RedisServer
from multihome.accounting.record import CallRecord, Usage
from multihome.config.metering import MeteringConfig, RateLimitRule
from multihome.metering.limiter import Limiter
from multihome.metering.rules import window_key
from multihome.schema.principal import Principal

# A gateway config with nothing but one model on an upstream that is never called: the metering tests
# add their `metering:` block.
NO_UPSTREAM = """
server: {allow_unauthenticated: true}
providers:
  sim: {kind: openai, endpoint: "http://127.0.0.1:9/v1", auth: {api_key_env: NOPE}}
deployments:
  a@sim: {provider: sim, model: m}
model_groups:
  g: {deployments: [a@sim]}
"""


@dataclass
class Dep:
    """The two fields of routing.catalog.DeploymentRuntime the limiter reads."""

    name: str
    max_output_tokens: int | None = None


def call(
    request_id: str,
    deployment: str | None = "dep-a",
    prompt=1000,
    completion=500,
    cached=0,
    estimated=False,
    tenant="ten_a",
    team=None,
    key_id="key_a",
    started=None,
    model_group="gpt-4o",
    status=200,
    outcome="ok",
    reasoning=0,
) -> CallRecord:
    started = time.time() if started is None else started
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        estimated=estimated,
        reasoning_tokens=reasoning,
    )
    return CallRecord(
        request_id=request_id,
        started_at=started,
        finished_at=started + 0.25,
        endpoint="chat",
        tenant=tenant,
        subject=key_id or "sub",
        principal_source="api_key",
        team=team,
        key_id=key_id,
        model_group=model_group,
        deployment=deployment,
        provider="prov",
        status=status,
        outcome=outcome,
        usage=usage,
        latency_ms=250.0,
    )


def principal(tenant="ten_a", team=None, key_id="key_a") -> Principal:
    return Principal(tenant=tenant, subject=key_id or "sub", source="api_key", team=team, key_id=key_id)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def same_minute():
    """Starts the test at least 10 s before the minute ends: tests that name a rate window's key from the
    clock after admitting (its minute) would otherwise read another window's key across the boundary."""
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.05)


def two_deployment_limits() -> MeteringConfig:
    """Tokens-per-minute limits on deployments dep-a and dep-b and on every key, under a fresh Redis prefix."""
    return MeteringConfig(
        key_prefix=f"t{uuid.uuid4().hex[:8]}:",
        rate_limits=[
            RateLimitRule(scope="deployment", id="dep-a", tokens_per_minute=1_000_000),
            RateLimitRule(scope="deployment", id="dep-b", tokens_per_minute=1_000_000),
            RateLimitRule(scope="key", id="*", tokens_per_minute=1_000_000),
        ],
    )


def deployment_calls_limits() -> MeteringConfig:
    """Requests- and tokens-per-minute limits on deployments dep-a and dep-b (dep-u has none) and on every key,
    under a fresh Redis prefix."""
    return MeteringConfig(
        key_prefix=f"t{uuid.uuid4().hex[:8]}:",
        rate_limits=[
            RateLimitRule(scope="deployment", id="dep-a", requests_per_minute=1000, tokens_per_minute=1_000_000),
            RateLimitRule(scope="deployment", id="dep-b", requests_per_minute=1000, tokens_per_minute=1_000_000),
            RateLimitRule(scope="key", id="*", requests_per_minute=1000, tokens_per_minute=1_000_000),
        ],
    )


async def tokens_this_minute(lim: Limiter, scope: str, ident: str) -> int:
    """The tokens counted this minute on the rate limit of `scope`/`ident` (tenant ten_a)."""
    return await counted_this_minute(lim, scope, ident, "t")


async def requests_this_minute(lim: Limiter, scope: str, ident: str) -> int:
    """The requests counted this minute on the rate limit of `scope`/`ident` (tenant ten_a)."""
    return await counted_this_minute(lim, scope, ident, "r")


async def counted_this_minute(lim: Limiter, scope: str, ident: str, kind: str) -> int:
    spec = lim.rules.rate_for(scope, ident, "ten_a")
    assert spec is not None
    now_ms = int(time.time() * 1000)
    (value,) = await lim.counters.read([window_key(spec, kind, now_ms // 60_000)], now_ms)
    return value
