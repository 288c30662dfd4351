"""The orchestration overhead of an agent step (issue 16 target: <= 1 ms per step, excluding the model
and the tool).

    .venv/bin/python bench/agent_step_bench.py [--steps 5] [--n 20] [--rounds 3]

One OpenAI simulator, one gateway worker (SQLite storage, `local` KMS, no audit trail), the MCP test
server (tests/mcp_server.py, in a process of its own). A response with an `mcp` tool and `steps=N` makes
N+1 model steps and N tool calls (`echo`). In interleaved rounds:
- agent: that response through the gateway, unary, `store: false` (client-measured, loopback);
- model: the N+1 chat requests the gateway sent for it (read back from the simulator's request log),
  each sent straight to the simulator;
- tool: the MCP work straight to the server, as the gateway does it: one session (connect, initialize),
  the listing, N calls, close;
- turn: a plain one-step response through the gateway minus the request the gateway sent for it, sent
  straight to the same path: what the pipeline costs one model call (policy, planning, metering), for
  scale. Unstored and without tools, that turn is passed through to the simulator's Responses API
  (unary), where a run's steps are streamed chat requests: a neighbour of a step's cost, not its measure.
Orchestration per step = (agent - model - tool) / (N+1), medians. It includes the pipeline's cost of
each model step (one `turn` each) and the Responses conversion. The gateway's CPU time per step is
measured too (schedstat, in ns): it does not move with the load of the machine, which the wall-clock
difference does; minus what the same MCP session costs this process's thread (the tool's client), it is the
gateway's CPU per step outside the tool, load-proof where the wall difference is not; and how long its event
loop waited for a CPU, which is that load's share of the wall.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))
sys.path.insert(0, str(ROOT.parent / "src"))

import gateway_bench  # noqa: E402
from gateway_bench import SIM_KEY, start_gateway, start_sim  # noqa: E402
from mcp_server import free_port  # noqa: E402
from multihome.crypto import init_key_file  # noqa: E402
from multihome.tools.egress import EgressPolicy  # noqa: E402
from multihome.tools.mcp_client import McpLimits, connect  # noqa: E402
from multihome.tools.model import McpEndpoint  # noqa: E402

TARGET_MS = 1.0
ADMIN = "bench-admin-key"
CONFIG = """
server: {{api_keys_env: [BENCH_CLIENT_KEY]}}
identity: {{admin_key_env: BENCH_ADMIN_KEY}}
storage: {{url: "sqlite:///{db}"}}
kms: {{local: {{key_file: "{tmp}/kms.key"}}}}
providers:
  sim: {{kind: openai, endpoint: "{sim}/v1", auth: {{api_key_env: BENCH_SIM_KEY}}}}
deployments:
  chat@sim: {{provider: sim, model: bench-model}}
model_groups:
  bench: {{deployments: [chat@sim]}}
egress: {{allow_networks: [127.0.0.0/8]}}
"""


def start_mcp_server() -> tuple[subprocess.Popen[str], str]:
    """The MCP test server in a process of its own: the gateway and this bench reach it alike."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from mcp_server import McpTestServer; "
        "s = McpTestServer().start(); print(s.url, flush=True); time.sleep(1e6)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT.parent / "tests")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def sched_s(pid: int, thread: int | None = None) -> tuple[float, float]:
    """(on CPU, waiting for a CPU) in seconds, from schedstat (ns, not clock ticks): of every thread of a
    process, or of one. The first is the gateway's own work whatever else the machine does; the second is
    how much of its wall time the machine's load took."""
    paths = [Path(f"/proc/{pid}/task/{thread}")] if thread else list(Path(f"/proc/{pid}/task").iterdir())
    cpu = wait = 0
    for task in paths:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            on, queued = (task / "schedstat").read_text().split()[:2]
            cpu, wait = cpu + int(on), wait + int(queued)
    return cpu / 1e9, wait / 1e9


def median(values: list[float]) -> float:
    return statistics.median(values)


async def measure(
    base: str, sim: str, mcp_url: str, args: argparse.Namespace, gateway_pid: int
) -> dict[str, list[float]]:
    admin = httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
    tenant = (await admin.post("/admin/v1/tenants", json={"name": "bench"})).json()["id"]
    key = (await admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "roles": ["member"]})).json()["key"]
    server = {"name": "tools", "url": mcp_url, "allowed_tools": ["echo"], "require_approval": "never"}
    assert (await admin.post(f"/admin/v1/tenants/{tenant}/mcp-servers", json=server)).status_code == 201
    await admin.aclose()
    client = httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=30)
    direct = httpx.AsyncClient(base_url=sim, headers={"authorization": f"Bearer {SIM_KEY}"}, timeout=30)
    tool = {"type": "mcp", "server_label": "tools", "server_url": mcp_url}
    agent_body = {"model": "bench", "input": f"steps={args.steps} go", "tools": [tool], "store": False}
    plain_body = {"model": "bench", "input": "hello there", "store": False}

    async def agent() -> tuple[float, list[tuple[str, bytes]]]:
        before = len((await direct.get("/_sim/requests")).json())
        t = time.perf_counter()
        resp = await client.post("/v1/responses", json=agent_body)
        took = time.perf_counter() - t
        assert resp.status_code == 200 and resp.json()["status"] == "completed", resp.text
        sent = (await direct.get("/_sim/requests")).json()[before:]
        assert len(sent) == args.steps + 1
        return took, [(r["path"], r["body"].encode()) for r in sent]

    async def model(requests: list[tuple[str, bytes]]) -> float:
        """The requests replayed to the path each went to: a plain unstored turn goes to the simulator's
        Responses API, not to chat (replayed to chat, it measured a 400 for a missing `messages`)."""
        t = time.perf_counter()
        for path, body in requests:
            r = await direct.post(path, content=body, headers={"content-type": "application/json"})
            await r.aread()
            assert r.status_code == 200, r.text
        return time.perf_counter() - t

    limits = McpLimits(egress=EgressPolicy(["127.0.0.0/8"]))  # one TLS context, as the gateway keeps one

    async def tools() -> tuple[float, float]:
        """(wall, this thread's CPU): the CPU is what the same MCP client costs the gateway for the run."""
        endpoint = McpEndpoint("tools", mcp_url)
        t, cpu = time.perf_counter(), time.thread_time()
        async with connect(endpoint, limits) as session:  # one session for the run, as the gateway holds it
            await session.list_tools()
            for _ in range(args.steps):
                await session.call_tool("echo", {"text": "example"})
        return time.perf_counter() - t, time.thread_time() - cpu

    async def turn() -> float:
        before = len((await direct.get("/_sim/requests")).json())
        t = time.perf_counter()
        assert (await client.post("/v1/responses", json=plain_body)).status_code == 200
        through = time.perf_counter() - t
        [sent] = (await direct.get("/_sim/requests")).json()[before:]
        return through - await model([(sent["path"], sent["body"].encode())])

    for _ in range(3):  # warm up: connections, the tenant's data key, code paths
        _, bodies = await agent()
        await model(bodies)
        await tools()
        await turn()
    keys = ("agent", "model", "tool", "turn", "per_step", "cpu", "cpu_outside", "queued", "cpu_turn")
    out: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(args.rounds):
        a, m, tl, tn, cpu, tool_cpu, queued, cpu_turn = [], [], [], [], [], [], [], []
        for _ in range(args.n):
            before, (_, queued_before) = sched_s(gateway_pid), sched_s(gateway_pid, gateway_pid)
            took, bodies = await agent()
            cpu.append(sched_s(gateway_pid)[0] - before[0])
            queued.append(sched_s(gateway_pid, gateway_pid)[1] - queued_before)
            a.append(took)
            m.append(await model(bodies))
            tool_wall, tool_thread = await tools()
            tl.append(tool_wall)
            tool_cpu.append(tool_thread)
            before = sched_s(gateway_pid)
            tn.append(await turn())
            cpu_turn.append(sched_s(gateway_pid)[0] - before[0])
        out["agent"].append(median(a) * 1e3)
        out["model"].append(median(m) * 1e3)
        out["tool"].append(median(tl) * 1e3)
        out["turn"].append(median(tn) * 1e3)
        out["per_step"].append((median(a) - median(m) - median(tl)) * 1e3 / (args.steps + 1))
        out["cpu"].append(median(cpu) * 1e3 / (args.steps + 1))
        out["cpu_outside"].append((median(cpu) - median(tool_cpu)) * 1e3 / (args.steps + 1))
        out["queued"].append(median(queued) * 1e3 / (args.steps + 1))
        out["cpu_turn"].append(median(cpu_turn) * 1e3)
    await client.aclose()
    await direct.aclose()
    return out


def report(res: dict[str, list[float]], args: argparse.Namespace) -> str:
    def cell(k: str) -> str:
        v = res[k]
        return f"**{median(v):.2f} ms** ({min(v):.2f}–{max(v):.2f})"

    per = median(res["per_step"])
    met = "yes" if per <= TARGET_MS else "**no**"
    steps = args.steps
    return "\n".join(
        [
            f"One gateway worker, SQLite, `local` KMS, no audit trail; a response of {steps + 1} model steps and "
            f"{steps} MCP tool calls; median of {args.rounds} round medians of {args.n} (range in brackets).",
            "",
            "| measure | median (range) | target | met |",
            "|---|---|---|---|",
            f"| the agent response through the gateway | {cell('agent')} | – | – |",
            f"| its {steps + 1} model requests, straight to the simulator | {cell('model')} | – | – |",
            f"| its MCP session, listing and {steps} calls, straight to the server | {cell('tool')} | – | – |",
            f"| **orchestration per step** (agent − model − tool) / {steps + 1} | {cell('per_step')} | ≤ 1 ms | {met} |",
            f"| of which the pipeline of one model call (a plain turn − its direct call) | {cell('turn')} | – | – |",
            f"| the gateway's CPU per step, all threads (its MCP client's work included) | {cell('cpu')} | – | – |",
            f"| **the gateway's CPU per step outside its MCP client** (the above − the same MCP session's CPU "
            f"here) | {cell('cpu_outside')} | ≤ 1 ms | {'yes' if median(res['cpu_outside']) <= TARGET_MS else '**no**'} |",
            f"| its event loop's wait for a CPU per step (the machine's load) | {cell('queued')} | – | – |",
            f"| the gateway's CPU for a plain one-step response, all threads | {cell('cpu_turn')} | – | – |",
        ]
    )


def arguments(doc: str, n: int) -> argparse.Namespace:
    """The command line both agent benches take."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--n", type=int, default=n)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    return parser.parse_args()


@contextlib.contextmanager
def upstreams() -> Iterator[tuple[Path, str, str]]:
    """A temporary folder with a KMS key file, the simulator and the MCP test server: (folder, simulator
    URL, MCP server URL), stopped however the bench ends."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        init_key_file(tmp / "kms.key")
        sim, sim_url = start_sim()
        mcp, mcp_url = start_mcp_server()
        try:
            yield tmp, sim_url, mcp_url
        finally:
            for proc in (sim, mcp):
                proc.terminate()
                proc.wait(10)


def publish(text: str, out: Path | None) -> None:
    print(text)
    if out:
        out.write_text(text + "\n")


def main() -> None:
    args = arguments(__doc__, 20)
    gateway_bench.ENV["BENCH_ADMIN_KEY"] = ADMIN
    with upstreams() as (tmp, sim_url, mcp_url):
        port = free_port()
        config = CONFIG.format(db=tmp / "bench.db", tmp=tmp, sim=sim_url)
        gateway = start_gateway(sim_url, port, tmp, log_level="warning", config_text=config)
        try:
            res = asyncio.run(measure(f"http://127.0.0.1:{port}", sim_url, mcp_url, args, gateway.pid))
        finally:
            gateway.terminate()
            gateway.wait(20)
    publish(report(res, args), args.out)


if __name__ == "__main__":
    main()
