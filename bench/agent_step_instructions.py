"""Instructions per agent response in the gateway process, every thread, counted by valgrind's callgrind:
deterministic enough to A/B a change of a few per cent on a loaded machine, where bench/agent_step_bench.py's
CPU rows move by ~0.1 ms a step from run to run.

    PYTHONPATH=src .venv/bin/python bench/agent_step_instructions.py [--tree /tmp/main] [--k 8]

The same set-up as bench/agent_step_bench.py (one simulator, the MCP test server, one gateway worker on
SQLite, `local` KMS, no audit trail), the gateway run under callgrind: four warm-up responses (6 model
steps and 5 `echo` calls each, `store: false`, unary), the counters zeroed, `k` more, dumped. The count
includes the MCP client's work in the gateway (the same client on both trees) and the background threads
(the usage writer's batches), which vary a little with timing: ~1 M instructions per response between two
runs of one tree. `--tree`: the tree to count (its src/, bench/ and tests/; default this one).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=HERE.parent)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    return parser.parse_args()


ARGS = _args()
for part in ("bench", "tests", "src"):
    sys.path.insert(0, str(ARGS.tree / part))

import httpx  # noqa: E402

import agent_step_bench as agent  # noqa: E402
import gateway_bench  # noqa: E402
from mcp_server import free_port  # noqa: E402


def _control(what: str, pid: int) -> None:
    subprocess.run(["callgrind_control", what, str(pid)], check=True, capture_output=True)


async def drive(base: str, mcp_url: str, pid: int) -> None:
    admin = httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {agent.ADMIN}"}, timeout=120)
    tenant = (await admin.post("/admin/v1/tenants", json={"name": "bench"})).json()["id"]
    key = (await admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "roles": ["member"]})).json()["key"]
    server = {"name": "tools", "url": mcp_url, "allowed_tools": ["echo"], "require_approval": "never"}
    assert (await admin.post(f"/admin/v1/tenants/{tenant}/mcp-servers", json=server)).status_code == 201
    await admin.aclose()
    client = httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=300)
    tool = {"type": "mcp", "server_label": "tools", "server_url": mcp_url}
    body = {"model": "bench", "input": f"steps={ARGS.steps} go", "tools": [tool], "store": False}

    async def respond() -> None:
        r = await client.post("/v1/responses", json=body)
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text

    for _ in range(4):
        await respond()
    await asyncio.to_thread(_control, "--zero", pid)
    for _ in range(ARGS.k):
        await respond()
    await asyncio.to_thread(_control, "--dump=measured", pid)
    await client.aclose()


def main() -> None:
    gateway_bench.ENV["BENCH_ADMIN_KEY"] = agent.ADMIN
    with agent.upstreams() as (tmp, sim_url, mcp_url), tempfile.TemporaryDirectory() as dumps:
        port = free_port()
        config = tmp / "bench.yaml"
        config.write_text(agent.CONFIG.format(db=tmp / "bench.db", tmp=tmp, sim=sim_url))
        env = {**gateway_bench.ENV, "PYTHONPATH": str(ARGS.tree / "src")}
        serve = [str(gateway_bench.BIN / "multihome"), "serve", "--config", str(config), "--port", str(port)]
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dumps}/cg.%p"]
        with open(tmp / "gateway.log", "w") as log:
            proc = subprocess.Popen([*valgrind, *serve, "--log-level", "warning"], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 300  # start-up under valgrind takes tens of seconds
            while True:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            asyncio.run(drive(f"http://127.0.0.1:{port}", mcp_url, proc.pid))
        finally:
            proc.terminate()
            proc.wait(120)
        total = 0
        for dump in Path(dumps).glob("cg.*.*"):  # the `--dump` file (the one at exit is cg.<pid>)
            text = dump.read_text(errors="replace")
            if "Trigger: dump measured" in text or "trigger: Client Request: measured" in text.lower():
                found = re.search(r"^summary: (\d+)", text, re.M) or re.search(r"^totals: (\d+)", text, re.M)
                assert found is not None
                total += int(found.group(1))
    per = total / ARGS.k
    print(f"{ARGS.tree}: {per / 1e6:.2f} M instructions per response, {per / (ARGS.steps + 1) / 1e6:.3f} M per step")


if __name__ == "__main__":
    main()
