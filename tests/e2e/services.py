"""Real backing services for tests: a throwaway redis-server on a free loopback port."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .processes import free_port


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        """`port`: reuse a stopped server's port, to play a Redis restart (it comes back empty)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it (apt-get install redis-server)")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        # A directory of its own: a replica or a failover test may still write dump.rdb (never the cwd's).
        self.dir = tempfile.TemporaryDirectory(prefix="mh-redis-")
        self.popen = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", self.dir.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(5)
        self.dir.cleanup()


@contextlib.contextmanager
def replicas(tmp: Path, db: str, config_for, env: dict[str, str], n: int = 2, redis: RedisServer | None = None):
    """`n` gateway processes sharing the database at `db` (at the head revision: stores.head_database;
    they start together) and one Redis, in front of one OpenAI simulator; `config_for(simulator_url)`
    gives the config (text or a tests/builders.py mapping; it reads MH_TEST_DB and MH_TEST_REDIS_URL from
    the environment). A `redis` passed in is the caller's to stop (a test that restarts it)."""
    from .processes import Gateway, Simulator, started_together

    own = redis is None
    redis, sim = redis or RedisServer(), Simulator("openai", "sim")
    env = {**env, "MH_TEST_REDIS_URL": redis.url, "MH_TEST_DB": db}
    gateways = []
    try:
        gateways = [Gateway(config_for(sim.url), tmp, env, wait=False) for _ in range(n)]
        yield started_together(*gateways)
    finally:
        for g in gateways:
            g.stop()
        sim.stop()
        if own:
            redis.stop()
