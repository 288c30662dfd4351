"""The attempt loop, table-driven, against a real in-process simulator over real HTTP.

The sleep function is recorded instead of awaited so backoff decisions are visible and fast.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from builders import config, deployment, group, open_door, simulated, typed
from multihome.config import Breaker, ModelGroup
from multihome.routing.attempts import AttemptRunner
from multihome.routing.breakers import Breakers
from multihome.routing.catalog import Catalog
from multihome.routing.latency import LatencyStats
from multihome.routing.planner import Planner, RequestShape
from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError
from multihome.simulators import SimulatorConfig, start_simulator


def _config(url: str, fail_over_on: list[str]) -> dict:
    return config(
        server=open_door(),
        providers={"sim": simulated("openai", url)},
        deployments={
            "primary": deployment("sim", "primary-model"),
            "secondary": deployment("sim", "secondary-model"),
            "textonly": deployment("sim", "text-model", capabilities=["chat"]),
        },
        model_groups={
            "g": group(
                "primary", "secondary", retries=1, backoff_ms=100, max_retry_after_s=2, fail_over_on=fail_over_on
            ),
            "tools": group("textonly", "secondary"),
        },
    )


DEFAULT = ["capacity", "unavailable"]
# A group that names no fail_over_on: docs/routing.md's "default" column (capacity, unavailable,
# unsupported and context_overflow fail over; a refusal is returned to the client).
CONFIG_DEFAULT = list(ModelGroup(deployments=["primary"]).fail_over_on)
WITH_REFUSAL = ["capacity", "unavailable", "refusal"]
CAPACITY_ONLY = ["capacity"]

CASES = [
    # (name, fail_over_on, fault on primary, expected attempts, served by, status, sleeps)
    ("healthy", DEFAULT, None, ["primary:ok"], "primary", 200, []),
    (
        "down",
        DEFAULT,
        {"status": 503},
        ["primary:http_503", "primary:http_503", "secondary:ok"],
        "secondary",
        200,
        [0.05],
    ),
    (
        "throttled once",
        DEFAULT,
        {"throttle": 0.5, "times": 1},
        ["primary:http_429", "primary:ok"],
        "primary",
        200,
        [0.5],
    ),
    ("long retry-after", DEFAULT, {"throttle": 30}, ["primary:http_429", "secondary:ok"], "secondary", 200, []),
    ("bad request", DEFAULT, {"status": 400}, ["primary:http_400"], "primary", 400, []),
    ("not found", DEFAULT, {"status": 404}, ["primary:http_404"], "primary", 404, []),
    ("prompt filter kept", DEFAULT, {"content_filter": "prompt"}, ["primary:content_filter"], "primary", 400, []),
    (
        "prompt filter fails over",
        WITH_REFUSAL,
        {"content_filter": "prompt"},
        ["primary:content_filter", "secondary:ok"],
        "secondary",
        200,
        [],
    ),
    ("output filter kept", DEFAULT, {"content_filter": "output"}, ["primary:content_filter"], "primary", 200, []),
    (
        "output filter fails over",
        WITH_REFUSAL,
        {"content_filter": "output"},
        ["primary:content_filter", "secondary:ok"],
        "secondary",
        200,
        [],
    ),
    (
        "unsupported fails over by default",
        CONFIG_DEFAULT,
        {"status": 400, "error_code": "unsupported_parameter"},
        ["primary:unsupported_parameter", "secondary:ok"],
        "secondary",
        200,
        [],
    ),
    (
        "unsupported kept when not listed",
        DEFAULT,
        {"status": 400, "error_code": "unsupported_value"},
        ["primary:unsupported_parameter"],
        "primary",
        400,
        [],
    ),
    (
        "refusal kept by default",
        CONFIG_DEFAULT,
        {"content_filter": "prompt"},
        ["primary:content_filter"],
        "primary",
        400,
        [],
    ),
    ("5xx not a decline here", CAPACITY_ONLY, {"status": 502}, ["primary:http_502"], "primary", 502, []),
    (
        "connection cut",
        DEFAULT,
        {"cut_after": 0},
        ["primary:disconnected", "primary:disconnected", "secondary:ok"],
        "secondary",
        200,
        [0.05],
    ),
]

BODY = msgspec.json.encode({"model": "g", "messages": [{"role": "user", "content": "hi"}]})


async def _run(fail_over_on: list[str], fault: dict | None, body: bytes = BODY, group: str = "g"):
    sim = await start_simulator(SimulatorConfig(kind="openai", name="unit"))
    catalog = Catalog(typed(_config(sim.url, fail_over_on)))
    await catalog.start()
    sleeps: list[float] = []

    async def record(delay: float) -> None:
        sleeps.append(delay)

    try:
        if fault:
            sim.state.set_fault({"match": "primary-model", **fault})
        parsed = parse_chat(body)
        grp = catalog.groups[group]
        breakers, latency = Breakers(Breaker()), LatencyStats()
        runner = AttemptRunner(breakers, latency, sleep=record, rand=lambda: 0.5)
        plan = Planner(breakers, latency).plan(grp, RequestShape(parsed.needs, False, parsed.request))
        try:
            served = await runner.run(
                grp, plan, lambda d: d.adapter.chat_request(parsed, d.upstream_model), lambda d, b, h: b, stream=False
            )
        except ApiError as err:
            return err, sleeps, sim.state.stats.to_dict()
        return served, sleeps, sim.state.stats.to_dict()
    finally:
        await catalog.close()
        await sim.close()


@pytest.mark.parametrize(
    "name, fail_over_on, fault, attempts, served_by, status, sleeps", CASES, ids=[c[0] for c in CASES]
)
def test_attempt_rules(name, fail_over_on, fault, attempts, served_by, status, sleeps):
    served, slept, _ = asyncio.run(_run(fail_over_on, fault))
    assert [f"{a.deployment}:{a.outcome}" for a in served.attempts] == attempts
    assert served.deployment.name == served_by
    assert served.status == status
    assert slept == pytest.approx(sleeps)


def test_everything_down_names_each_attempt():
    err, _, stats = asyncio.run(_run(DEFAULT, {"status": 503, "match": None}))
    assert isinstance(err, ApiError) and err.status == 503
    assert err.body.code == "all_deployments_failed"
    assert "primary: http_503" in err.body.message and "secondary: http_503" in err.body.message
    assert stats["requests"] == 4  # two tries on each deployment, no more


def test_capability_skip_happens_before_any_call():
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    body = msgspec.json.encode({"model": "tools", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]})
    served, _, stats = asyncio.run(_run(DEFAULT, None, body=body, group="tools"))
    assert [a.deployment for a in served.attempts] == ["secondary"]
    assert stats["requests"] == 1


async def _fanned(pieces: int, fail_at: int | None = None):
    """A fanned-out unary call against a real HTTP server that notes how many pieces were in flight at once."""
    from aiohttp import web

    from multihome.providers.base import UpstreamRequest
    from multihome.routing import attempts

    in_flight, peak, seen = 0, 0, []

    async def handle(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        i = int(await request.text())
        seen.append(i)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02 * (pieces - i) / pieces)  # later pieces answer first
        in_flight -= 1
        if i == fail_at:
            return web.json_response({"error": {"message": "bad piece"}}, status=400)
        return web.Response(body=b"[%d]" % i, content_type="application/json")

    app = web.Application()
    app.router.add_post("/piece", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    catalog = Catalog(typed(_config(f"http://127.0.0.1:{port}", DEFAULT)))
    await catalog.start()
    try:
        req = UpstreamRequest(
            f"http://127.0.0.1:{port}/piece",
            {"content-type": "application/json"},
            b"",
            fan_out=[str(i).encode() for i in range(pieces)],
            join=lambda bodies: b"[" + b",".join(b[1:-1] for b in bodies) + b"]",
        )
        dep = catalog.groups["g"].deployments[0]
        result = await attempts._unary_once(
            dep, catalog.groups["g"], req, lambda d, b, h: b'{"joined":%s}' % b, time.perf_counter()
        )
        return result, peak, sorted(seen)
    finally:
        await catalog.close()
        await runner.cleanup()


def test_a_fanned_out_call_is_bounded_joined_in_order_and_fails_as_a_whole():
    from multihome.routing.attempts import FAN_OUT_CONCURRENCY

    result, peak, seen = asyncio.run(_fanned(20))
    assert result.kind == "ok" and seen == list(range(20))
    assert msgspec.json.decode(result.body)["joined"] == list(range(20))  # call order, not answer order
    assert 1 < peak <= FAN_OUT_CONCURRENCY
    failed, _, seen = asyncio.run(_fanned(6, fail_at=3))
    assert failed.kind == "client_error" and failed.status == 400 and seen == list(range(6))


def test_a_refusal_failed_over_from_carries_its_billed_answer():
    """The provider bills a 200 refusal (usage and all): the attempt that got it carries it for the call's
    accounting, unless it is the answer served."""
    served, _, _ = asyncio.run(_run(WITH_REFUSAL, {"content_filter": "output"}))
    refused, ok = served.attempts
    assert refused.billed is not None and ok.billed is None
    dep, peek = refused.billed
    assert dep.name == "primary" and peek.usage.completion_tokens > 0
    kept, _, _ = asyncio.run(_run(DEFAULT, {"content_filter": "output"}))
    assert kept.attempts[0].billed is None  # served: charged as the call itself, with its usage
    assert kept.peek is not None and kept.peek.usage.completion_tokens > 0
