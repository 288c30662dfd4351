"""One chat call through a catalog's group, as the gateway's attempt runner makes it (no pipeline, no
identity): what the upstream-client tests send through real HTTP."""

from __future__ import annotations

import asyncio

from multihome.config import Breaker
from multihome.routing.attempts import AttemptRunner
from multihome.routing.breakers import Breakers
from multihome.routing.catalog import Catalog
from multihome.routing.latency import LatencyStats
from multihome.routing.planner import Planner, RequestShape
from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError


async def attempt_call(catalog: Catalog, name: str, body: bytes, stream: bool = False):
    """The group `name`'s answer to `body` (an ApiError is returned, not raised)."""
    parsed = parse_chat(body)
    grp = catalog.groups[name]
    breakers, latency = Breakers(Breaker()), LatencyStats()
    runner = AttemptRunner(breakers, latency, sleep=lambda s: asyncio.sleep(0), rand=lambda: 0.5)
    plan = Planner(breakers, latency).plan(grp, RequestShape(parsed.needs, stream, parsed.request))
    try:
        return await runner.run(
            grp, plan, lambda d: d.adapter.chat_request(parsed, d.upstream_model), lambda d, b, h: b, stream=stream
        )
    except ApiError as err:
        return err
