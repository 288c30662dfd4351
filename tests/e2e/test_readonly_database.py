"""A PostgreSQL failover that leaves the gateway on a server that only reads (the old primary turned standby,
or a DNS name not yet moved: RDS/Aurora, Azure Flexible Server, Patroni): every write fails with SQLSTATE 25006
`read_only_sql_transaction`, reads work. Played on a real PostgreSQL with `default_transaction_read_only` on
the gateway's database and its sessions ended (each reconnects read-only), against the real `multihome`
process with every governance part on (storage, budgets and rate limits, audit, the usage spool, background
responses), the official openai SDK as client. What docs/storage.md "Outages" promises: chat calls answered and
none of their usage rows lost or written twice; admin writes and stored responses a 503 `storage_unavailable`
with Retry-After, reads answered; a SIGTERM ends as with the database unreachable (rows in the spool, one
warning, no traceback); the next start waits for writes, then writes them; a start with a migration pending
refuses in one line."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import httpx
import openai
import sqlalchemy as sa

from builders import audit, config, database, deployment, groups, identity, key_budget, simulated
from multihome.crypto import init_key_file
from multihome.metering.tables import usage_calls
from multihome.storage.engine import create_engine

from .helpers import until
from .processes import Gateway, Simulator

ADMIN_KEY = "mh-read-only-admin"
CLIENT_KEY = "mh-read-only-client"
ENV = {"MH_RO_ADMIN": ADMIN_KEY, "MH_RO_CLIENT": CLIENT_KEY}
USER = [{"role": "user", "content": "count this call"}]


def _config(tmp: Path, db: str, sim: Simulator) -> dict:
    return config(
        server={"drain_timeout_s": 3, "api_keys_env": ["MH_RO_CLIENT"]},
        storage=database(db, refresh_s=0.05),
        kms={"local": {"key_file": str(tmp / "kms.key")}},
        identity=identity("MH_RO_ADMIN"),
        audit=audit(tmp / "audit"),
        metering={
            "spool": {"dir": str(tmp / "spool")},
            "budgets": [key_budget("MH_RO_CLIENT", "1000", period="day")],
            "rate_limits": [{"scope": "key", "id": "*", "requests_per_minute": 10_000}],
        },
        providers={"oa": simulated("openai", sim.url)},
        deployments={"quick": deployment("oa", "m-quick")},
        model_groups=groups({"quick": "quick"}, retries=0),
        responses={"background": {"lease_s": 3.0, "poll_s": 0.05}},
    )


def read_only(url: str, on: bool) -> None:
    """The gateway's database read-only (a standby) or not (the primary reached): its new sessions take the
    setting, its existing ones are ended so the gateway reconnects to the server as it now is."""
    base, db = url.replace("postgresql+asyncpg", "postgresql").rsplit("/", 1)

    async def run() -> None:
        conn = await asyncpg.connect(f"{base}/postgres")
        try:
            await conn.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = {"on" if on else "off"}')
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                db,
            )
        finally:
            await conn.close()

    asyncio.run(run())


def _recorded(db: str) -> list[str]:
    async def run() -> list[str]:
        engine = create_engine(db)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.select(usage_calls.c.request_id))).scalars())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _told(log: str) -> str:
    """The log without its access-log lines (one per call)."""
    return "\n".join(line for line in log.splitlines() if " multihome.access: " not in line)[-6000:]


def _unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "storage_unavailable", resp.text
    assert resp.headers.get("retry-after"), resp.headers


def test_a_start_with_a_migration_pending_on_a_read_only_database_refuses_in_one_line(tmp_path, pg_database):
    db = pg_database(migrated=False)
    read_only(db, True)
    sim = Simulator("openai", "oa-ro-start")
    try:
        init_key_file(tmp_path / "kms.key")
        gw = Gateway(_config(tmp_path, db, sim), tmp_path, ENV, wait=False)
        try:
            gw.popen.wait(120)
        finally:
            log = gw.stop()
    finally:
        sim.stop()
    assert gw.popen.returncode not in (0, None), _told(log)
    assert "Traceback" not in log, _told(log)
    assert (
        "start-up failed: the database cannot be reached or takes no writes (ReadOnlySQLTransactionError: "
        "cannot execute CREATE TABLE in a read-only transaction)" in log
    ), _told(log)


def test_a_failover_to_a_read_only_server_loses_no_usage_row_and_answers_503_for_writes(tmp_path, pg_database):
    db = pg_database()
    sim = Simulator("openai", "oa-ro")
    read_only_now = False
    try:
        init_key_file(tmp_path / "kms.key")
        cfg = _config(tmp_path, db, sim)
        gw = Gateway(cfg, tmp_path, ENV)
        admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, http_client=http)
        ask = client.chat.completions.with_raw_response.create
        try:
            answered = [ask(model="quick", messages=USER).headers["x-request-id"] for _ in range(2)]
            done = client.responses.create(model="quick", input="before", background=True).id
            until(lambda: client.responses.retrieve(done).status == "completed", what="a background turn before")
            read_only(db, True)
            read_only_now = True
            # Reads answer (the first, perhaps, once the pool has replaced its ended connections).
            until(lambda: admin.get("/admin/v1/tenants").status_code == 200, what="admin reads while read-only")
            _unavailable(admin.post("/admin/v1/tenants", json={"name": "during"}))
            answered += [ask(model="quick", messages=USER).headers["x-request-id"] for _ in range(3)]
            try:
                client.responses.create(model="quick", input="keep me", store=True)
                raise AssertionError("a stored response while the database takes no writes")
            except openai.APIStatusError as exc:
                _unavailable(exc.response)
            gw.popen.send_signal(signal.SIGTERM)
            gw.popen.wait(120)
        finally:
            admin.close()
            log = gw.stop()
        assert gw.popen.returncode in (0, -signal.SIGTERM), _told(log)
        assert "Traceback" not in log and " ERROR " not in log, _told(log)
        assert "kept in the usage spool" in log and "the next start writes them" in log, _told(log)
        # A replica started while the database still takes no writes waits (not ready) for the spool's rows to
        # be written; once the new primary is reached it writes them, once, and is ready.
        gw = Gateway(cfg, tmp_path, ENV, wait=False)
        try:
            time.sleep(3)
            assert gw.popen.poll() is None, _told(gw.output())
            read_only(db, False)
            read_only_now = False
            gw.wait_ready()
            with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as a:
                assert a.post("/admin/v1/tenants", json={"name": "after"}).status_code == 201
                names = [t["name"] for t in a.get("/admin/v1/tenants").json()["data"]]
                assert "during" not in names and "after" in names  # nothing half-written
        finally:
            log = gw.stop()
        assert "Traceback" not in log, _told(log)
        rows = _recorded(db)
        assert sorted(r for r in rows if r in answered) == sorted(answered), (answered, rows)  # none lost, none twice
    finally:
        sim.stop()
        if read_only_now:
            read_only(db, False)
