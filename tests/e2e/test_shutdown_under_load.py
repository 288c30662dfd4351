"""SIGTERM (and SIGINT) in the middle of a busy gateway, as a tester of crashes and outages would send it: unary and
streamed calls from the official SDK under way, a background response running, every poller of the
database (snapshots, the job queue, retention sweeps, contracts) at work on an event loop kept busy.
The process exits cleanly within its drain deadline, its log holds no traceback and no ERROR line,
every answered call has its usage row and its audit `call` event, each stream under way either
completed or ended with the error event the SDK raises, and the background response, handed back,
is finished by the next gateway on the database (docs/serving.md "What a graceful stop guarantees",
docs/metering.md, docs/audit.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import sqlalchemy as sa

from builders import audit, config, database, deployment, groups, identity, price, simulated
from multihome.audit import AuditReader, Filters
from multihome.contracts.tables import ledger_accruals
from multihome.crypto import init_key_file
from multihome.metering.tables import usage_calls
from multihome.storage.engine import create_engine

from .helpers import until
from .processes import LOOP_LOAD, Gateway, Simulator

ADMIN_KEY = "mh-shutdown-load-admin"
DRAIN_S = 3
# Short periods: the database pollers run many times a second, so a stop lands on their work.
SHARE = {
    "id": "rs-stop",
    "rate": "0.5",
    "basis": {"providers": ["oa"]},
    "starts_on": str(dt.date.today() - dt.timedelta(days=10)),
    "ends_on": str(dt.date.today() + dt.timedelta(days=300)),
    "currency": "USD",
}
BUSY = {
    "background": {"lease_s": 3.0, "poll_s": 0.02, "event_flush_ms": 50},
    "retention": {"sweep_interval_s": 0.2},
}


def _config(tmp: Path, db: str, sim: Simulator) -> dict:
    return config(
        server={"drain_timeout_s": DRAIN_S},
        storage=database(db, refresh_s=0.02),
        kms={"local": {"key_file": str(tmp / "kms.key")}},
        identity=identity("MH_LOAD_ADMIN_KEY"),
        audit=audit(tmp / "audit"),
        providers={"oa": simulated("openai", sim.url)},
        deployments={
            "quick": deployment("oa", "m-quick"),
            "long": deployment("oa", "m-long"),
            "bg": deployment("oa", "m-bg"),
            "endless": deployment("oa", "m-endless"),
        },
        model_groups=groups({"quick": "quick", "long": "long", "bg": "bg", "endless": "endless"}, retries=0),
        contracts={"refresh_s": 0.1},
        responses=BUSY,
    )


def _new_key(gw: Gateway) -> str:
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        resp = admin.post("/admin/v1/tenants", json={"name": "load"})
        assert resp.status_code == 201, resp.text
        resp = admin.post(f"/admin/v1/tenants/{resp.json()['id']}/keys", json={"name": "k", "roles": ["member"]})
        assert resp.status_code == 201, resp.text
        return resp.json()["key"]


@dataclass
class _Traffic:
    """What the clients saw: request ids of answered calls, and anything that was not a clean outcome."""

    answered: list[str] = field(default_factory=list)
    streams_cut: list[str] = field(default_factory=list)  # ended by the drain with the error event
    refused: int = 0  # no connection after the signal (the listening socket was closed)
    wrong: list[str] = field(default_factory=list)
    signalled: threading.Event = field(default_factory=threading.Event)  # SIGTERM was sent
    stop: threading.Event = field(default_factory=threading.Event)  # the clients stop calling
    lock: threading.Lock = field(default_factory=threading.Lock)


USER = [{"role": "user", "content": "count this call"}]


def _client(gw: Gateway, key: str) -> openai.OpenAI:
    # No keep-alive: a call after the signal meets the closed listening socket, never a connection the
    # gateway closes as idle just as a request goes out on it (a race of HTTP keep-alive, not a loss).
    http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=60, http_client=http)


def _unary(client: openai.OpenAI, seen: _Traffic) -> None:
    raw = client.chat.completions.with_raw_response.create(model="quick", messages=USER)
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "stop"
    with seen.lock:
        seen.answered.append(raw.headers["x-request-id"])


def _stream(client: openai.OpenAI, seen: _Traffic, model: str = "long") -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=USER, stream=True)
    rid = raw.headers["x-request-id"]
    finish = None
    try:
        for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
    except openai.APIError as exc:
        if isinstance(exc, openai.APIConnectionError) or exc.code != "gateway_shutting_down":
            with seen.lock:
                seen.wrong.append(f"stream {rid} broke: {exc!r}")
            return
        with seen.lock:
            seen.answered.append(rid)
            seen.streams_cut.append(rid)
        return
    with seen.lock:
        if finish == "stop":
            seen.answered.append(rid)
        else:
            seen.wrong.append(f"stream {rid} ended without its finish reason or an error event")


def _endless_stream(client: openai.OpenAI, seen: _Traffic) -> None:
    """A stream still going at the drain deadline: it must end with the error event."""
    _stream(client, seen, "endless")


def _drive(client: openai.OpenAI, seen: _Traffic, call) -> None:
    while not seen.stop.is_set():
        try:
            call(client, seen)
        except openai.APIConnectionError as exc:
            # After the signal: refused, or reset while still in the kernel's accept queue when the listening
            # socket closed, or closed by uvicorn's shutdown as a connection without a request yet (accepted
            # just before the socket closed, its bytes not yet read: the gateway never read it; the SDKs
            # retry all three). That none of these had been taken in is checked below: every call the
            # provider received has its usage row.
            if seen.signalled.is_set() and (
                isinstance(exc.__cause__, (httpx.ConnectError, httpx.ReadError))
                or (
                    isinstance(exc.__cause__, httpx.RemoteProtocolError)
                    and "without sending a response" in str(exc.__cause__)
                )
            ):
                with seen.lock:
                    seen.refused += 1
                return
            with seen.lock:
                seen.wrong.append(f"{call.__name__}: {exc!r} caused by {exc.__cause__!r}")
            return
        except Exception as exc:  # the test reports every other outcome
            with seen.lock:
                seen.wrong.append(f"{call.__name__}: {exc!r}")
            return


async def _recorded(db: str) -> dict[str, str]:
    """Usage rows: request id -> model group."""
    engine = create_engine(db)
    try:
        async with engine.connect() as conn:
            q = sa.select(usage_calls.c.request_id, usage_calls.c.model_group)
            return {rid: group for rid, group in (await conn.execute(q)).all()}
    finally:
        await engine.dispose()


async def _accrued(db: str) -> set[str]:
    """Request ids with an accrual in the ledger."""
    engine = create_engine(db)
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(sa.select(ledger_accruals.c.request_id))).scalars())
    finally:
        await engine.dispose()


def _faults(sim: Simulator) -> None:
    sim.reset()  # its request log counts this round's calls
    sim.fault(latency_ms=30, match="m-quick")
    sim.fault(chunks=30, chunk_delay_ms=20, match="m-long")  # ~0.6 s: some finish, some are cut
    sim.fault(chunks=80, chunk_delay_ms=50, match="m-bg")  # 4 s: still running at the signal
    sim.fault(chunks=400, chunk_delay_ms=50, match="m-endless")  # 20 s: cut at the drain deadline


def _told(log: str) -> str:
    """The log without its access-log lines (one per call)."""
    return "\n".join(line for line in log.splitlines() if " multihome.access: " not in line)[-6000:]


def _sigterm_mid_load(tmp_path: Path, db: str, rounds: int) -> None:
    init_key_file(tmp_path / "kms.key")
    sim = Simulator("openai", "oa-load")
    try:
        env = {"MH_LOAD_ADMIN_KEY": ADMIN_KEY}
        background: list[str] = []
        key = None
        for n in range(rounds):
            _faults(sim)
            before = asyncio.run(_recorded(db))
            gw = Gateway(_config(tmp_path, db, sim), tmp_path, env, command=LOOP_LOAD)
            try:
                key = key or _new_key(gw)
                client = _client(gw, key)
                background.append(client.responses.create(model="bg", input="a long one", background=True).id)
                seen = _Traffic()
                threads = [
                    threading.Thread(target=_drive, args=(_client(gw, key), seen, call), daemon=True)
                    for call in (_unary, _unary, _unary, _stream, _stream, _stream, _endless_stream)
                ]
                for t in threads:
                    t.start()
                until(lambda: len(seen.answered) >= 30 or seen.wrong, what="traffic under way")
                seen.signalled.set()
                gw.popen.send_signal((signal.SIGTERM, signal.SIGINT)[n % 2])  # Ctrl-C stops the same way
                sent = time.monotonic()
                time.sleep(0.2)  # calls keep coming for a moment after the signal
                seen.stop.set()
                # The documented bound: the drain deadline, then writing what is queued. Generous for a
                # busy machine; without open calls it is a fraction of a second.
                gw.popen.wait(DRAIN_S + 60)
                took = time.monotonic() - sent
                for t in threads:
                    t.join(60)
            finally:
                log = gw.stop()
            told = _told(log)
            assert gw.popen.returncode in (0, -signal.SIGTERM), told
            assert "Traceback" not in log and " ERROR " not in log, told
            assert not seen.wrong, (seen.wrong, told)
            assert seen.streams_cut, "the endless stream was open at the deadline: it ends with the error event"
            assert took < DRAIN_S + 30, f"round {n}: the process took {took:.1f}s to exit"
            recorded = asyncio.run(_recorded(db))
            assert set(seen.answered) <= recorded.keys(), set(seen.answered) - recorded.keys()
            # Nothing taken in is lost: each chat call the provider received is metered.
            chat = ("quick", "long", "endless")
            upstream = sum(1 for r in sim.requests() if r["model"] in [f"m-{g}" for g in chat])
            metered = sum(1 for rid, group in recorded.items() if rid not in before and group in chat)
            assert metered >= upstream > 0, (metered, upstream)
            audited = {
                e["body"]["request_id"]
                for _, e in AuditReader(str(tmp_path / "audit")).iter_events(Filters(kind="call"))
            }
            assert set(seen.answered) <= audited, set(seen.answered) - audited
        # The background responses handed back at each stop are finished by the next gateway on the database
        # (each runs its turn again: quick now, the 4 s was there to be under way at a signal).
        sim.clear_faults()
        gw = Gateway(_config(tmp_path, db, sim), tmp_path, env)
        try:
            client = _client(gw, key)
            for rid in background:
                until(lambda: client.responses.retrieve(rid).status == "completed", what=f"{rid} completed")
        finally:
            log = gw.stop()
        assert "Traceback" not in log, log[-3000:]
    finally:
        sim.stop()


def test_sigterm_under_load_loses_nothing_and_logs_no_traceback(tmp_path, db_url):
    _sigterm_mid_load(tmp_path, db_url, rounds=3)


def test_sigterm_with_postgresql_down_exits_in_bounded_time_and_the_next_start_writes_the_rows(
    tmp_path, pg_server, pg_database
):
    """The database is gone when the stop comes: the answered calls' rows are in the usage spool, so the
    stop does not wait out the 30 s the usage writer gives a database without one (docs/metering.md), nor
    the head registry's 5 s (docs/audit.md): it says in one warning how many rows wait in the spool, logs
    no error (nothing is lost), and the next start writes the rows."""
    pg = pg_server  # the worker's server, stopped for this test and started again however it ends
    paused = False
    sim = Simulator("openai", "oa-pg-down")
    try:
        db = pg_database()
        cfg = {
            **_config(tmp_path, db, sim),
            "server": {"drain_timeout_s": DRAIN_S, "api_keys_env": ["MH_LOAD_CLIENT"]},
            "metering": {"spool": {"dir": str(tmp_path / "spool")}},
            # Priced calls accrue to a revenue share: the ledger's queue waits in the spool too (docs/contracts.md).
            "contracts": {"refresh_s": 0.1, "flush_interval_s": 0.02, "revenue_share": [SHARE]},
        }
        cfg["deployments"]["quick"]["price"] = price(1_000_000, 1_000_000)
        init_key_file(tmp_path / "kms.key")
        env = {"MH_LOAD_ADMIN_KEY": ADMIN_KEY, "MH_LOAD_CLIENT": "client-key"}
        gw = Gateway(cfg, tmp_path, env)
        answered: list[str] = []
        try:
            client = _client(gw, "client-key")
            ask = client.chat.completions.with_raw_response.create
            answered += [ask(model="quick", messages=USER).headers["x-request-id"] for _ in range(2)]
            pg.pause()
            paused = True
            answered += [ask(model="quick", messages=USER).headers["x-request-id"] for _ in range(3)]
            sent = time.monotonic()
            gw.popen.send_signal(signal.SIGTERM)
            gw.popen.wait(120)  # bounded: a few seconds; generous for a busy machine
            took = time.monotonic() - sent
        finally:
            log = gw.stop()
        told = _told(log)
        assert gw.popen.returncode in (0, -signal.SIGTERM), told
        assert took < 90, f"{took:.0f}s to exit"
        assert "Traceback" not in log and " ERROR " not in log, told
        [said] = re.findall(
            r"usage writer closed with (\d+) rows unwritten: no batch could be written for (\d+) s .*; (\d+) rows "
            r"kept in the usage spool .*, the next start writes them",
            log,
        )
        # Its own count of the wait: not the 30 s. The spool keeps the rows unwritten, and rows written but whose
        # accruals are not (the ledger holds them).
        assert 3 <= int(said[0]) <= int(said[2]) <= 5 and int(said[1]) < 30, told
        assert "the head registry did not take the last checkpoints" in log, told  # a warning: the files hold them
        assert "their calls' usage rows stay in the usage spool, and the next start accrues them" in log, told
        pg.resume()
        paused = False
        gw = Gateway(cfg, tmp_path, env)  # replays the spool before it is ready
        log = gw.stop()
        assert "Traceback" not in log, _told(log)
        recorded = asyncio.run(_recorded(db))
        assert set(answered) <= recorded.keys(), set(answered) - recorded.keys()
        assert set(answered) <= asyncio.run(_accrued(db)), "every answered call accrues to the share, once back"
    finally:
        sim.stop()
        if paused:
            pg.resume()
