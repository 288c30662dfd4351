"""Three gateway replicas on one PostgreSQL and one Redis, behind HAProxy, in front of an OpenAI simulator.

What a platform team runs, assembled on loopback from real parts: `tests/pg.py`'s private PostgreSQL,
`redis-server`, the simulator, `multihome serve` three times (each with its own audit directory and usage
spool directory, as each pod has its own volume) and Debian's `haproxy`, which health-checks `/readyz` and retries a connection
refused by a stopped replica on another one. `tests/cluster/` tests through it; `make cluster` starts one
for a person (`python -m cluster` from tests/).
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import (
    api_keys,
    audit,
    config,
    database_env,
    deployment,
    group,
    identity,
    key_budget,
    price,
    simulated,
    yaml_text,
)
from e2e.processes import VENV_BIN, Proc, Simulator, free_port
from e2e.services import RedisServer
from multihome.audit.keys import public_pem
from multihome.crypto import init_key_file
from pg import PostgresServer

REPLICAS = 3
CLIENT_KEY, BUDGET_KEY, ADMIN_KEY = "mh-cluster-client", "mh-cluster-budget", "mh-cluster-admin"
RATE_LIMIT = 30  # requests per minute on the `limited` group's deployment, across all replicas
BUDGET = "0.01"  # USD per day on BUDGET_KEY: a few dozen calls
PRICE = (10, 10)  # USD per million tokens in and out: a call of ~30 tokens costs ~$0.0003, reserves ~$0.001
KEYS_ENV = {"MH_CL_CLIENT": CLIENT_KEY, "MH_CL_BUDGET": BUDGET_KEY, "MH_CL_ADMIN": ADMIN_KEY}
SHARE_RATE = "0.5"  # of every call's cost to the contract ledger's revenue share `rs-cluster`
LEASE_S = 2.0  # a killed replica's background jobs are claimed by another this long after its last renewal


def cluster_config(
    sim_url: str, audit_dir: Path, kms_key: Path, *, fail_open: bool = True, spool_dir: Path | None = None
) -> dict:
    """One replica's config: all share the database, Redis and KMS key; each has its own audit directory
    and usage spool directory (`spool_dir`, default beside the audit directory), as each pod has its
    own volume. `fail_open`: what budgets and rate limits do while Redis cannot be reached (docs/metering.md)."""
    spool = spool_dir if spool_dir is not None else audit_dir.with_name(audit_dir.name + "-usage-spool")
    return config(
        server=api_keys("MH_CL_CLIENT", "MH_CL_BUDGET", drain_timeout_s=5),
        storage=database_env("MH_CL_DB", refresh_s=0.25),
        identity=identity("MH_CL_ADMIN"),
        audit=audit(audit_dir, signing_key_env="MH_CL_AUDIT_KEY", checkpoint_every_s=1),
        kms={"local": {"key_file": str(kms_key)}},
        routing={"redis_url_env": "MH_CL_REDIS"},
        responses={"background": {"lease_s": LEASE_S, "poll_s": 0.1}},
        contracts={"flush_interval_s": 0.5, "revenue_share": [_share()]},
        metering={
            "redis_url_env": "MH_CL_REDIS",
            "fail_open": fail_open,
            "rate_limits": [{"scope": "deployment", "id": "d-limited", "requests_per_minute": RATE_LIMIT}],
            "budgets": [key_budget("MH_CL_BUDGET", BUDGET)],
            "spool": {"dir": str(spool)},
        },
        providers={"sim": simulated("openai", sim_url)},
        deployments={
            "d-chat": deployment("sim", "chat-model", price=price(*PRICE)),
            "d-limited": deployment("sim", "limited-model", price=price(*PRICE)),
            "d-budget": deployment("sim", "budget-model", price=price(*PRICE), max_output_tokens=64),
            "d-slow": deployment("sim", "slow-model", price=price(*PRICE)),  # slowed by a simulator fault
        },
        model_groups={
            "chat": group("d-chat", retries=0),
            "limited": group("d-limited", retries=0),
            "budgeted": group("d-budget", retries=0),
            "slow": group("d-slow", retries=0),
        },
    )


def _share() -> dict:
    today = dt.datetime.now(dt.UTC).date()
    return {
        "id": "rs-cluster",
        "parties": ["Us", "Them"],
        "rate": SHARE_RATE,
        "basis": {"providers": ["sim"]},
        "starts_on": str(today - dt.timedelta(days=10)),
        "ends_on": str(today + dt.timedelta(days=300)),
        "currency": "USD",
    }


class Replica(Proc):
    """`multihome serve` on a fixed port (a replica restarted after a crash comes back at its address)."""

    def __init__(
        self, name: str, config_path: Path, port: int, env: dict[str, str], log: Path, *, wait: bool = True
    ) -> None:
        self.name, self.config_path, self.port, self.env = name, config_path, port, env
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(
            [str(VENV_BIN / "multihome"), "serve", "--config", str(config_path), "--port", str(port)],
            env,
            log.with_suffix(".log"),
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        _wait_ready(self.url, self, 90)


class Balancer(Proc):
    """HAProxy in front of the replicas: round robin, `/readyz` checked every 300 ms, a refused
    connection retried on another replica (`option redispatch`), never a request once sent."""

    def __init__(self, replicas: list[tuple[str, int]], tmp: Path) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"  server {name} 127.0.0.1:{port} check" for name, port in replicas)
        cfg = tmp / "haproxy.cfg"
        cfg.write_text(
            f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  retries 3
  option redispatch
frontend gateway
  bind 127.0.0.1:{self.port}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  timeout check 2s
  default-server inter 300ms fall 3 rise 2
{servers}
"""
        )
        subprocess.run([binary, "-c", "-q", "-f", str(cfg)], check=True, timeout=30)
        super().__init__([binary, "-db", "-f", str(cfg)], log=tmp / "haproxy.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"haproxy did not come up: {self.stop()[-2000:]}")


class Cluster:
    """Everything above, started in order and stopped in reverse however it ends (`with Cluster(tmp) as c:`).

    `pg`: a running PostgreSQL server to make the cluster's database in (a copy of its migrated template),
    dropped at the end with the server left running: the tests pass their worker's one server, which saves
    an initdb and a full migration per test. Without it the cluster starts a server of its own."""

    def __init__(
        self, tmp: Path, replicas: int = REPLICAS, *, fail_open: bool = True, pg: PostgresServer | None = None
    ) -> None:
        self.tmp = tmp
        self.fail_open = fail_open
        self._shared_pg = pg
        self._pg_down = False  # a shared server paused by `stop_database` is resumed by `close`
        self.pg: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.sim: Simulator | None = None
        self.replicas: list[Replica] = []
        self.balancer: Balancer | None = None
        try:
            self._start(replicas)
        except BaseException:
            self.close()
            raise

    def _start(self, n: int) -> None:
        from multihome.storage import migrate_sync

        if self._shared_pg is not None:
            self.pg = self._shared_pg
            self.db_url = self.pg.migrated_database()
            self.dbname = self.db_url.rsplit("/", 1)[1]
        else:
            self.pg = PostgresServer()
            self.dbname = "cluster"
            self.db_url = self.pg.create_database(self.dbname)
            migrate_sync(self.db_url)
        self.redis = RedisServer()
        self.sim = Simulator("openai", "cluster-sim")
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        self.public_key = self.tmp / "audit.pub.pem"
        self.public_key.write_bytes(public_pem(key))
        self.env = {
            **KEYS_ENV,
            "MH_CL_DB": self.db_url,
            "MH_CL_REDIS": self.redis.url,
            "MH_CL_AUDIT_KEY": base64.b64encode(seed).decode(),
        }
        self.ports = [free_port() for _ in range(n)]
        init_key_file(self.tmp / "kms.key")  # shared by the replicas, so they can all start at once
        for i in range(n):  # started together, as a deployment's pods are
            self.replicas.append(self._replica(i, wait=False))
        for replica in self.replicas:
            replica.wait_ready()
        self.balancer = Balancer([(r.name, r.port) for r in self.replicas], self.tmp)
        self.url = self.balancer.url

    def audit_dir(self, i: int) -> Path:
        return self.tmp / f"audit-r{i + 1}"

    def _replica(self, i: int, *, wait: bool = True) -> Replica:
        assert self.sim is not None
        path = self.tmp / f"r{i + 1}.yaml"
        path.write_text(
            yaml_text(cluster_config(self.sim.url, self.audit_dir(i), self.tmp / "kms.key", fail_open=self.fail_open))
        )
        return Replica(f"r{i + 1}", path, self.ports[i], self.env, self.tmp / f"r{i + 1}", wait=wait)

    def restart(self, i: int) -> Replica:
        """Start replica i again, at its address and with its audit directory (after a crash or a stop)."""
        log = self.replicas[i].output()
        (self.tmp / f"r{i + 1}.before-restart.log").write_text(log)
        self.replicas[i] = self._replica(i)
        return self.replicas[i]

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.stop()

    def start_redis(self) -> None:
        """Redis back at its address, empty (no persistence): what a restart without a volume does."""
        assert self.redis is not None
        self.redis = RedisServer(self.redis.port)

    def stop_database(self) -> None:
        """PostgreSQL down, its data kept (`pg_ctl stop -m fast` closes every replica's connections)."""
        assert self.pg is not None
        self.pg.pause()
        self._pg_down = True

    def start_database(self) -> None:
        assert self.pg is not None
        self.pg.resume()
        self._pg_down = False

    def stop_replicas(self) -> list[str]:
        """Graceful stops (SIGTERM: drain, then every queued usage row and audit event written), all
        signalled at once. Only once each: a second SIGTERM would end what is still open at once (api/drain.py)."""
        running = [r for r in self.replicas if r.popen.poll() is None]
        for r in running:
            r.popen.terminate()
        for r in running:
            try:
                r.popen.wait(60)
            except subprocess.TimeoutExpired:
                r.popen.kill()
                r.popen.wait()
        return [r.output() for r in self.replicas]

    def sql(self, query: str) -> list[str]:
        """Rows of `query` on the shared database, one `|`-separated line each."""
        assert self.pg is not None
        return [line for line in self.pg.psql(query, self.dbname).splitlines() if line]

    def close(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        self.stop_replicas()
        if self.sim is not None:
            self.sim.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.pg is not None and self.pg is self._shared_pg:
            if self._pg_down:
                self.start_database()
            self.pg.drop_database(self.dbname)
        elif self.pg is not None:
            self.pg.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_ready(url: str, proc: Proc, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{url} exited: {proc.output()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    out = proc.stop()
    raise RuntimeError(f"{url} did not become ready: {out[-3000:]}")
