"""kill -9 of the real gateway loses no answered call's usage row (metering/spool.py), SQLite and PostgreSQL.

The official openai SDK drives chat calls and streams; the gateway's writer is set to hold every row in
memory (a flush interval of a minute), so without the spool every row would be lost; it is killed
with SIGKILL at a random point after some answers, then started again on the same database and
spool directory. Checked against the client's own record: every request id it got an answer for
(a 200 with its body; a stream read to its end) has exactly one usage row, and the key's budget
counter (seeded at start from the stored rows) equals the sum of its rows' costs. A control run
without the spool shows the test can fail: the answered calls' rows are gone.
"""

from __future__ import annotations

import asyncio
import random
import signal
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
import sqlalchemy as sa

from builders import api_keys, database, identity, key_budget, price, simulated, single
from multihome.metering.tables import usage_calls
from multihome.storage.engine import create_engine

from .processes import Gateway, Simulator, key_budget_spent

CLIENT_KEY, ADMIN_KEY = "mh-spool-client-key", "mh-spool-admin-key"
ENV = {"MH_SPOOL_CLIENT": CLIENT_KEY, "MH_SPOOL_ADMIN": ADMIN_KEY}
KEY_ID = "env:MH_SPOOL_CLIENT"
USER = [{"role": "user", "content": "hello there"}]


def _config(sim: str, db_url: str, spool: dict) -> dict:
    return single(
        simulated("openai", sim),
        names=("sim", "d", "chat"),
        deployment_fields={"price": price(10, 20)},
        group_fields={"retries": 0},
        server=api_keys("MH_SPOOL_CLIENT"),
        storage=database(db_url),
        identity=identity("MH_SPOOL_ADMIN"),
        metering={
            "budgets": [key_budget("MH_SPOOL_CLIENT", "1000")],
            # Every row stays in memory until the process stops: only the spool can keep it.
            "writer": {"flush_interval_ms": 60_000, "batch_size": 100_000},
            "spool": spool,
        },
    )


async def _drive(gw: Gateway, answered: list[str], kill_after: int) -> None:
    """8 workers of chat calls and streams until `kill_after` answers, then SIGKILL mid-load."""
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    stop = asyncio.Event()

    async def worker(n: int) -> None:
        for i in range(60):
            if stop.is_set():
                return
            try:
                if (n + i) % 3 == 0:
                    raw = await client.chat.completions.with_raw_response.create(
                        model="chat", messages=USER, stream=True
                    )
                    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
                else:
                    raw = await client.chat.completions.with_raw_response.create(model="chat", messages=USER)
                    text = raw.parse().choices[0].message.content or ""
            except (openai.APIError, httpx.HTTPError):
                return  # the gateway is gone
            if text:
                answered.append(raw.headers["x-request-id"])
            if len(answered) >= kill_after and not stop.is_set():
                stop.set()
                gw.popen.send_signal(signal.SIGKILL)  # other workers' calls are in flight right now

    try:
        await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(8))), 120)
    finally:
        await client.close()


async def _rows(db_url: str) -> dict[str, tuple[str, int]]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            q = sa.select(usage_calls.c.request_id, usage_calls.c.key_id, usage_calls.c.cost_nanos)
            return {rid: (key, nanos) for rid, key, nanos in (await conn.execute(q)).all()}
    finally:
        await engine.dispose()


def _spent(gw: Gateway) -> Decimal:
    return key_budget_spent(gw, ADMIN_KEY, KEY_ID)


def _kill_and_restart(tmp_path: Path, db_url: str, spool: dict) -> tuple[list[str], Gateway]:
    sim = Simulator("openai", "spool-sim")
    gw = None
    try:
        sim.fault(latency_ms=3)
        config = _config(sim.url, db_url, spool)
        gw = Gateway(config, tmp_path, ENV)
        answered: list[str] = []
        asyncio.run(_drive(gw, answered, kill_after=random.randint(30, 120)))
        assert gw.popen.wait(10) == -signal.SIGKILL
        assert len(answered) >= 30, "too few answers before the kill to test anything"
        gw = Gateway(config, tmp_path, ENV)
        return answered, gw
    except BaseException:
        if gw is not None:
            gw.stop()
        raise
    finally:
        sim.stop()


def test_sigkill_loses_no_answered_calls_usage_row(db_url, tmp_path):
    # SQLite: the default directory (beside the database file); PostgreSQL: one set in the config.
    sqlite = db_url.startswith("sqlite")
    spool_dir = Path(db_url.split("///", 1)[1]).parent / "usage-spool" if sqlite else tmp_path / "spool"
    answered, gw = _kill_and_restart(tmp_path, db_url, {} if sqlite else {"dir": str(spool_dir)})
    try:
        rows = asyncio.run(_rows(db_url))  # the restarted gateway replayed the spool before it became ready
        missing = set(answered) - set(rows)
        assert not missing, f"{len(missing)} of {len(answered)} answered calls have no usage row"
        assert len(set(answered)) == len(answered)  # and each id is one row (the primary key)
        spent = sum(nanos for key, nanos in rows.values() if key == KEY_ID)
        assert spent > 0 and _spent(gw) == Decimal(spent) / Decimal(10**9), "budget spend == the sum of the rows"
        assert len(list(spool_dir.glob("*.spool"))) == 1, "the killed process's files are gone; the new one's own"
    finally:
        gw.stop(sig_timeout=30)
    assert not list(spool_dir.glob("*.spool")), "a clean stop leaves no spool file"
    assert len(asyncio.run(_rows(db_url))) == len(rows)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_the_spool_the_same_kill_loses_the_answered_calls_rows(db_url, tmp_path):
    answered, gw = _kill_and_restart(tmp_path, db_url, {"enabled": False})
    gw.stop(sig_timeout=30)
    rows = asyncio.run(_rows(db_url))
    assert len(set(answered) - set(rows)) == len(answered), "the control run lost nothing: the test proves nothing"
