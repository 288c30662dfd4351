"""Start and stop real processes for end-to-end tests: simulators and the `multihome` gateway."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx

from builders import yaml_text  # tests/ is on sys.path (pytest rootdir insertion)
from ports import free_port

VENV_BIN = Path(sys.executable).parent
# httpx builds a TLS context (certifi's bundle: ~20 ms of CPU) for each client unless given one; the tests'
# clients speak plain HTTP on loopback, and a helper polled back to back would spend its time building them.
_TLS = ssl.create_default_context()


def local_http(**kw) -> httpx.Client:
    """An httpx.Client (`kw`: base_url, headers, timeout...) that is cheap to make in a helper polled often."""
    return httpx.Client(verify=_TLS, **kw)


class Proc:
    """`log`: send stdout and stderr to this file instead of pipes (a chatty process, e.g. at debug
    level, would otherwise fill the pipe and block); stop() returns what it wrote either way."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.args = args
        self.log = log
        out = open(log, "w") if log is not None else subprocess.PIPE
        self.popen = subprocess.Popen(
            args,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
            text=True,
        )
        if log is not None:
            out.close()  # the child holds its own copy

    def output(self) -> str:
        if self.log is not None:
            return self.log.read_text(errors="replace")
        return self.popen.stderr.read() if self.popen.stderr else ""

    def stop(self, sig_timeout: float = 5) -> str:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(sig_timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.output()


class Simulator(Proc):
    """`python -m multihome.simulators`, controlled through its /_sim/ endpoints. `extra`: its
    command-line flags (`Simulators.start` spells the credential ones by kind).

    Its READY line (its address) is read at the first use of `url` or `http`, not here: simulators made
    one after the other (a module's three, a fleet's six) start together, each paying its imports
    (0.3-0.5 s of CPU) while the others do."""

    def __init__(self, kind: str, name: str, *extra: str, env: dict[str, str] | None = None) -> None:
        super().__init__(
            [sys.executable, "-m", "multihome.simulators", "--kind", kind, "--name", name, "--port", "0", *extra], env
        )
        self.name = name
        self._url: str | None = None
        self._http: httpx.Client | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self._wait_ready()
        return self._url

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=5)
        return self._http

    def _wait_ready(self) -> str:
        # 60 s: started with others on a busy machine (each was given 15 s when they started one at a time).
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if line.startswith("READY "):
                break
            if self.popen.poll() is not None:
                raise RuntimeError(f"simulator {self.name} exited: {self.popen.stderr.read()}")
        else:
            raise RuntimeError(f"simulator {self.name} did not become ready")
        return line.split()[1].rstrip("/")

    def fault(self, **knobs) -> None:
        self.http.post("/_sim/faults", json=knobs).raise_for_status()

    def clear_faults(self) -> None:
        self.http.delete("/_sim/faults").raise_for_status()

    def reset(self) -> None:
        self.http.post("/_sim/reset").raise_for_status()

    def stats(self) -> dict:
        return self.http.get("/_sim/stats").json()

    def requests(self) -> list[dict]:
        return self.http.get("/_sim/requests").json()

    def stop(self, sig_timeout: float = 5) -> str:
        if self._http is not None:
            self._http.close()
        return super().stop(sig_timeout)


# The flag with which each kind's simulator requires a credential held in an environment variable.
_CREDENTIAL_FLAG = {"vertex": "--oauth-token-env"}  # the others check an API key


class Simulators:
    """Simulators started for one test, module or stack, stopped together however it ends
    (`with Simulators() as sims:`, or the `simulator` fixture in conftest.py)."""

    def __init__(self) -> None:
        self.started: list[Simulator] = []

    def start(
        self,
        kind: str = "openai",
        name: str | None = None,
        *extra: str,
        key_env: str | None = None,
        aws_env: tuple[str, str] | None = None,
        region: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Simulator:
        """A simulator of `kind` named `name` (default: the kind), requiring the key or token held in
        `key_env`, or (Bedrock) SigV4 with the access key id and secret held in `aws_env`, serving
        `region`; `extra`: any other flags; `env`: the environment holding those variables."""
        flags = list(extra)
        if key_env is not None:
            flags += [_CREDENTIAL_FLAG.get(kind, "--api-key-env"), key_env]
        if aws_env is not None:
            flags += ["--aws-access-key-id-env", aws_env[0], "--aws-secret-access-key-env", aws_env[1]]
        if region is not None:
            flags += ["--region", region]
        sim = Simulator(kind, name or kind, *flags, env=env)
        self.started.append(sim)
        return sim

    def close(self) -> None:
        for sim in self.started:
            sim.stop()
        self.started.clear()

    def __enter__(self) -> Simulators:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# `multihome` with every logger (the gateway's, uvicorn's, aiohttp's, botocore's...) at DEBUG.
DEBUG_ALL = [
    sys.executable,
    "-c",
    "import logging, sys; logging.basicConfig(level=logging.DEBUG); "
    "from multihome.cli import main; sys.exit(main(sys.argv[1:]))",
]


# `multihome` as a loaded machine runs it: every few milliseconds a callback holds the event loop for 3 ms,
# and each ROLLBACK on SQLite waits 20 ms for aiosqlite's thread (a 2-core CI runner under a whole test run).
# Each await takes longer, so a background task's database work is far more often under way when something
# stops it.
LOOP_LOAD = [
    sys.executable,
    "-c",
    "import asyncio, sys, time\n"
    "import aiosqlite.core, uvicorn.server\n"
    "rollback = aiosqlite.core.Connection.rollback\n"
    "async def slow_rollback(self):\n"
    "    await asyncio.sleep(0.02)\n"
    "    return await rollback(self)\n"
    "aiosqlite.core.Connection.rollback = slow_rollback\n"
    "started = uvicorn.server.Server.startup\n"
    "async def startup(self, sockets=None):\n"
    "    loop = asyncio.get_running_loop()\n"
    "    def hog():\n"
    "        time.sleep(0.003)\n"
    "        loop.call_later(0.002, hog)\n"
    "    hog()\n"
    "    await started(self, sockets)\n"
    "uvicorn.server.Server.startup = startup\n"
    "from multihome.cli import main; sys.exit(main(sys.argv[1:]))",
]


class Gateway(Proc):
    """`multihome serve` on a free port with the given config (its text, or a mapping built with
    tests/builders.py). `command`: how to run `multihome` (DEBUG_ALL for every log line); `log`: where
    its output goes (a file in `tmp` unless given). `wait=False`: return once started, for replicas
    started together (`started_together`)."""

    def __init__(
        self,
        config: str | dict,
        tmp: Path,
        env: dict[str, str],
        *extra: str,
        command: list[str] | None = None,
        log: Path | None = None,
        wait: bool = True,
    ) -> None:
        self.port = free_port()
        path = tmp / f"gateway-{self.port}.yaml"
        path.write_text(config if isinstance(config, str) else yaml_text(config))
        # Always to a file: at the default log level each call writes an access-log line, which
        # would fill an unread pipe and block the gateway.
        log = log if log is not None else tmp / f"gateway-{self.port}.log"
        super().__init__(
            [
                *(command or [str(VENV_BIN / "multihome")]),
                "serve",
                "--config",
                str(path),
                "--port",
                str(self.port),
                *extra,
            ],
            env,
            log,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120  # worker processes start slowly on a busy machine (load 25: > 60 s)
        # One client for every poll: `httpx.get` builds a client and its TLS context each time (~20 ms of
        # CPU every 50 ms: CPU the starting gateway needs on a busy machine).
        with local_http(timeout=1) as http:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"gateway exited: {self.output()}")
                try:
                    if http.get(self.url + "/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        stderr = self.stop()  # never leave a gateway (and its workers) running behind a failed test
        raise RuntimeError(f"gateway did not become ready: {stderr[-2000:]}")


def started_together(*gateways: Gateway) -> list[Gateway]:
    """Gateways made with `wait=False` once each is ready (as a deployment's replicas start, at once:
    each pays its imports while the others do); if one fails, every one is stopped."""
    try:
        for gw in gateways:
            gw.wait_ready()
    except BaseException:
        for gw in gateways:
            gw.stop()
        raise
    return list(gateways)


def key_budget_spent(gw: Gateway, admin_key: str, key_id: str) -> Decimal:
    """What the default tenant's budget of key `key_id` holds spent or reserved, as the admin API reports it."""
    resp = httpx.get(
        f"{gw.url}/admin/v1/tenants/default/budgets",
        params={"key": key_id},
        headers={"authorization": f"Bearer {admin_key}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    [budget] = [b for b in resp.json()["data"] if b["scope"] == "key" and b["scope_id"] == key_id]
    return Decimal(budget["spent_or_reserved"])
