"""`server.upstream_threads` sizes the upstream client's Tokio runtime in the served process: one
worker thread by default (a second cost CPU and req/s, bench/RESULTS.md), the configured number when
set. Was: Tokio's default, a worker per core. Tokio's blocking threads (pyqwest hands each answer back
to Python on one) carry the same name and end after 10 s idle, so the test waits for them to go."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from builders import api_keys, config, deployment, group, simulated

from .helpers import until
from .processes import Gateway, Simulator

KEY = "mh-threads-client-key"


@pytest.fixture(scope="module")
def sim():
    s = Simulator("openai", "threads-openai")
    yield s
    s.stop()


def _runtime_threads(pid: int) -> int:
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:  # a thread that ended while listed
            pass
    return names.count("tokio-rt-worker")


def test_upstream_calls_run_on_the_configured_threads(sim, tmp_path):
    # Both settings at once: the wait for the blocking threads' 10 s idle is then paid once.
    gateways = {threads: _gateway(sim, tmp_path / str(threads), threads) for threads in (None, 3)}
    try:
        for gw in gateways.values():
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
            for _ in range(3):  # the runtime starts with the first upstream call
                client.chat.completions.create(model="g", messages=[{"role": "user", "content": "hi"}])
        for threads, gw in gateways.items():
            expected = threads or 1
            until(
                lambda: _runtime_threads(gw.popen.pid) == expected, 60, f"{expected} runtime threads, no blocking ones"
            )
    finally:
        logs = [gw.stop() for gw in gateways.values()]
    for log in logs:
        assert "Traceback" not in log, log[-3000:]


def _gateway(sim: Simulator, tmp_path: Path, threads: int | None) -> Gateway:
    tmp_path.mkdir()
    server = api_keys("MH_THREADS_KEY", **({"upstream_threads": threads} if threads else {}))
    cfg = config(
        server=server,
        providers={"oa": simulated("openai", sim.url)},
        deployments={"oa": deployment("oa", "gpt-threads")},
        model_groups={"g": group("oa", retries=0)},
    )
    # The config decides, whatever the environment says.
    return Gateway(cfg, tmp_path, {"MH_THREADS_KEY": KEY, "TOKIO_WORKER_THREADS": "5"})
