"""The agent loop's own work per step, measured in-process (issue 16 target: <= 1 ms per step, excluding
the model and the tool).

    .venv/bin/python bench/agent_loop_bench.py [--steps 5] [--n 30] [--rounds 3]

bench/agent_step_bench.py measures a step from outside (the whole response minus the model requests and
the MCP calls made straight), which on a loaded machine is a difference of noisy wall times. This one
runs the gateway in this process (the composition root's app, driven through httpx's ASGI transport;
the simulator and the MCP test server in processes of their own, as there) and reads the thread's CPU
time at the loop's own boundaries: from the end of a model step's stream to the moment the next step
enters the pipeline (`Pipeline.run`, where planning begins), minus the CPU spent inside the tool call in
between (the MCP client's work is the tool's). That is the loop's own work per step: the step's items,
the call's bookkeeping (idempotency key, hashes, the `mcp_call` item and its events), the limits, and the
next step's request (the whole context converted to a chat request again). The last step's tail (from
its stream's end to the response rendered) is reported apart. Thread CPU does not move with the load
of the machine the way wall time does; the event loop's other tasks only run while the tool call is
awaited, and that time is subtracted.

The step's model call and its stream are measured the same way: the model call from its entry into the
pipeline (where the loop's part ends) to the upstream answer's first chunk, minus the upstream exchange (`routing.attempts._stream_once`:
aiohttp's request and response, the first chunk parsed; what a direct call to the model pays too), and
the stream from there to the step's items (read, converted, usage and spend, accounted). Their sum with
the loop's own work is the gateway's CPU per step outside the model's and the tool's exchanges.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))
sys.path.insert(0, str(ROOT.parent / "src"))

from agent_step_bench import ADMIN, CONFIG, arguments, publish, upstreams  # noqa: E402
from gateway_bench import ENV  # noqa: E402
from multihome.api.pipeline import Pipeline  # noqa: E402
from multihome.api.responses.agent import AgentRun  # noqa: E402
from multihome.app import build_app  # noqa: E402
from multihome.config import parse_config  # noqa: E402
from multihome.routing import attempts  # noqa: E402
from multihome.tools.toolbox import Toolbox  # noqa: E402

TARGET_MS = 1.0


class Probe:
    """Thread-CPU marks at the loop's boundaries, for the run being measured."""

    def __init__(self) -> None:
        self.stream_end: float | None = None
        self.tool_cpu = 0.0
        self.between: list[float] = []  # per step: the loop's own CPU between a stream's end and the next plan
        self.model: list[float] = []  # per step: its model call up to the answer's first chunk, minus the exchange
        self.stream: list[float] = []  # per step: its stream read, converted, accounted (the step's items made)
        self.exchange = 0.0
        self.planned: float | None = None  # when the step's model call entered the pipeline
        self.on = False

    def install(self) -> None:
        probe = self
        relay, run, call, close, events = AgentRun._relay, Pipeline.run, Toolbox.call, Toolbox.close, AgentRun.events
        model, step, once = AgentRun._model, AgentRun._step, attempts._stream_once

        async def timed_model(self: AgentRun) -> Any:
            probe.planned = None
            served = await model(self)
            if probe.on and probe.planned is not None:  # from the pipeline's start: the loop's part is `between`
                probe.model.append(time.thread_time() - probe.planned - probe.exchange)
            return served

        async def timed_once(*args: Any, **kwargs: Any) -> Any:
            t = time.thread_time()
            try:
                return await once(*args, **kwargs)
            finally:
                probe.exchange += time.thread_time() - t

        async def timed_step(self: AgentRun, served: Any) -> AsyncIterator[bytes]:
            t = time.thread_time()
            async for piece in step(self, served):
                yield piece
            if probe.on:
                probe.stream.append(time.thread_time() - t)

        async def timed_relay(self: AgentRun, served: Any, conv: Any) -> AsyncIterator[bytes]:
            async for piece in relay(self, served, conv):
                yield piece
            probe.stream_end, probe.tool_cpu = time.thread_time(), 0.0

        async def timed_run(self: Pipeline, call_: Any, *args: Any, **kwargs: Any) -> Any:
            if probe.on and probe.stream_end is not None:
                probe.between.append(time.thread_time() - probe.stream_end - probe.tool_cpu)
                probe.stream_end = None
            probe.planned, probe.exchange = time.thread_time(), 0.0
            return await run(self, call_, *args, **kwargs)

        async def timed_call(self: Toolbox, *args: Any, **kwargs: Any) -> Any:
            t = time.thread_time()
            try:
                return await call(self, *args, **kwargs)
            finally:
                probe.tool_cpu += time.thread_time() - t

        async def timed_close(self: Toolbox) -> None:  # the MCP session's end is the tool's work too
            t = time.thread_time()
            try:
                await close(self)
            finally:
                probe.tool_cpu += time.thread_time() - t

        async def timed_events(self: AgentRun, start: bool = True) -> AsyncIterator[bytes]:
            probe.stream_end = None
            async for piece in events(self, start):
                yield piece
            if probe.on and probe.stream_end is not None:  # the terminal event: the response is rendered and kept
                probe.tail.append(time.thread_time() - probe.stream_end - probe.tool_cpu)
            probe.stream_end = None

        self.tail: list[float] = []
        AgentRun._relay = timed_relay  # type: ignore[method-assign]
        Pipeline.run = timed_run  # type: ignore[method-assign]
        Toolbox.call = timed_call  # type: ignore[method-assign]
        Toolbox.close = timed_close  # type: ignore[method-assign]
        AgentRun.events = timed_events  # type: ignore[method-assign]
        AgentRun._model = timed_model  # type: ignore[method-assign]
        AgentRun._step = timed_step  # type: ignore[method-assign]
        attempts._stream_once = timed_once


async def measure(app: Any, mcp_url: str, args: argparse.Namespace, probe: Probe) -> dict[str, list[float]]:
    for service in app.services:
        await service.start()
    transport = httpx.ASGITransport(app=app)
    admin = httpx.AsyncClient(transport=transport, base_url="http://gw", headers={"authorization": f"Bearer {ADMIN}"})
    tenant = (await admin.post("/admin/v1/tenants", json={"name": "bench"})).json()["id"]
    key = (await admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "roles": ["member"]})).json()["key"]
    server = {"name": "tools", "url": mcp_url, "allowed_tools": ["echo"], "require_approval": "never"}
    assert (await admin.post(f"/admin/v1/tenants/{tenant}/mcp-servers", json=server)).status_code == 201
    client = httpx.AsyncClient(
        transport=transport, base_url="http://gw", headers={"authorization": f"Bearer {key}"}, timeout=60
    )
    tool = {"type": "mcp", "server_label": "tools", "server_url": mcp_url}
    body = {"model": "bench", "input": f"steps={args.steps} go", "tools": [tool], "store": False}

    async def agent() -> None:
        resp = await client.post("/v1/responses", json=body)
        assert resp.status_code == 200 and resp.json()["status"] == "completed", resp.text

    for _ in range(3):  # warm up: connections, the tenant's data key, code paths
        await agent()
    out: dict[str, list[float]] = {"between": [], "tail": [], "by_step": [], "model": [], "stream": [], "step": []}
    per_step: list[list[float]] = [[] for _ in range(args.steps)]
    for _ in range(args.rounds):
        between: list[float] = []
        tail: list[float] = []
        model: list[float] = []
        stream: list[float] = []
        for _ in range(args.n):
            probe.between, probe.tail, probe.model, probe.stream, probe.on = [], [], [], [], True
            await agent()
            probe.on = False
            assert len(probe.between) == args.steps, probe.between
            between += probe.between
            tail += probe.tail
            model += probe.model
            stream += probe.stream
            for i, v in enumerate(probe.between):
                per_step[i].append(v)
        out["between"].append(statistics.median(between) * 1e3)
        out["tail"].append(statistics.median(tail) * 1e3)
        out["model"].append(statistics.median(model) * 1e3)
        out["stream"].append(statistics.median(stream) * 1e3)
        out["step"].append((statistics.median(between) + statistics.median(model) + statistics.median(stream)) * 1e3)
    out["by_step"] = [statistics.median(v) * 1e3 for v in per_step]
    await client.aclose()
    await admin.aclose()
    for service in reversed(app.services):
        await service.close()
    return out


def report(res: dict[str, list[float]], args: argparse.Namespace) -> str:
    def cell(k: str) -> str:
        v = res[k]
        return f"**{statistics.median(v):.3f} ms** ({min(v):.3f}–{max(v):.3f})"

    met = "yes" if statistics.median(res["between"]) <= TARGET_MS else "**no**"
    step_met = "yes" if statistics.median(res["step"]) <= TARGET_MS else "**no**"
    by_step = ", ".join(f"{v:.3f}" for v in res["by_step"])
    return "\n".join(
        [
            f"In-process (thread CPU), one gateway in the bench's process, SQLite, `local` KMS, no audit trail; a "
            f"response of {args.steps + 1} model steps and {args.steps} MCP calls; median of {args.rounds} round "
            f"medians of {args.n} responses (range in brackets).",
            "",
            "| measure | median (range) | target | met |",
            "|---|---|---|---|",
            f"| **the loop's own CPU per step** (a stream's end → the next step's plan, minus the tool call) "
            f"| {cell('between')} | ≤ 1 ms | {met} |",
            f"| the step's model call in the pipeline (policy, limits, planning, accounting's start; up to the answer's "
            f"first chunk, minus the upstream exchange in aiohttp) | {cell('model')} | – | – |",
            f"| the step's stream (read, converted to Responses events and items, usage and spend, accounted) "
            f"| {cell('stream')} | – | – |",
            f"| **the gateway's CPU per step outside the model's and the tool's exchanges** (the three above) "
            f"| {cell('step')} | ≤ 1 ms | {step_met} |",
            f"| the last step's tail (its stream's end → the response rendered, minus closing the MCP session) | {cell('tail')} | – | – |",
            f"| per step, 1st to {args.steps}th (ms) | {by_step} | – | – |",
        ]
    )


def main() -> None:
    args = arguments(__doc__, 30)
    os.environ.update({**ENV, "BENCH_ADMIN_KEY": ADMIN})
    probe = Probe()
    probe.install()
    with upstreams() as (tmp, sim_url, mcp_url):
        # Long runs (--steps 50: is a step's cost flat over the run?) need the agent limits raised.
        limits = f"responses: {{agent: {{max_steps: {args.steps + 5}, max_tool_calls: {args.steps + 5}}}}}\n"
        config = parse_config(CONFIG.format(db=tmp / "bench.db", tmp=tmp, sim=sim_url) + limits)
        res = asyncio.run(measure(build_app(config), mcp_url, args, probe))
    publish(report(res, args), args.out)


if __name__ == "__main__":
    main()
