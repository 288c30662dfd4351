"""A graceful stop (SIGTERM) loses nothing the gateway accepted: calls in flight are answered, and
every answered call's usage row and contract accrual reach the database before the process exits,
even when they were still queued for their next group commit. A call still open at the drain
deadline (`server.drain_timeout_s`, `--drain-timeout`) ends with an error the official SDKs raise and
is still metered and audited; with nothing open the process exits at once (docs/serving.md)."""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import anthropic
import openai
import pytest

from builders import api_keys, audit, config, database_env, deployment, group, price, simulated, single
from multihome.audit import AuditReader, Filters

from .processes import Gateway, Simulator

TODAY = dt.datetime.now(dt.UTC).date()
PRICE = price(3, 15)


def _held_rows_config(url: str) -> dict:
    """Usage rows and contract accruals wait in memory until shutdown."""
    share = {
        "id": "rs",
        "rate": "0.5",
        "starts_on": TODAY - dt.timedelta(days=1),
        "ends_on": TODAY + dt.timedelta(days=30),
        "currency": "USD",
    }
    return single(
        simulated("openai", url),
        names=("oa", "d", "gpt-4o"),
        deployment_fields={"price": PRICE},
        group_fields={"retries": 0},
        storage=database_env(),
        server=api_keys("MH_TEST_CLIENT"),
        metering={"writer": {"flush_interval_ms": 60000, "batch_size": 100000}},
        contracts={"flush_interval_s": 60, "batch_max": 100000, "revenue_share": [share]},
    )


USER = [{"role": "user", "content": "count this call"}]


def test_sigterm_answers_calls_in_flight_and_writes_every_row(tmp_path, simulator, sqlite_database):
    sim = simulator("openai", "oa")
    db = tmp_path / "m.db"
    gw = Gateway(
        _held_rows_config(sim.url),
        tmp_path,
        {"MH_TEST_DB": sqlite_database(db.name), "MH_TEST_CLIENT": "client-key"},
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=30)
    try:
        with ThreadPoolExecutor(16) as pool:
            answered = list(
                pool.map(lambda _: client.chat.completions.create(model="gpt-4o", messages=USER).usage, range(60))
            )
        # Three more calls are still waiting on the provider when the stop signal arrives.
        sim.fault(latency_ms=700)
        late: list = []
        threads = [
            threading.Thread(
                target=lambda: late.append(client.chat.completions.create(model="gpt-4o", messages=USER).usage)
            )
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        time.sleep(0.3)
        stderr = gw.stop(sig_timeout=20)
        for t in threads:
            t.join(10)
        # uvicorn re-raises the signal once its graceful shutdown is done: -SIGTERM is a clean stop.
        assert gw.popen.returncode in (0, -signal.SIGTERM), stderr
        assert "Traceback" not in stderr, stderr
        assert len(late) == 3, "calls in flight at SIGTERM must still be answered"
    finally:
        gw.stop()

    usages = answered + late
    cost = sum((Decimal(u.prompt_tokens * 3 + u.completion_tokens * 15) / 1_000_000 for u in usages), Decimal(0))
    with sqlite3.connect(db) as conn:
        rows, tokens = conn.execute(
            "SELECT count(*), sum(prompt_tokens + completion_tokens) FROM usage_calls"
        ).fetchone()
        accruals = conn.execute("SELECT amount FROM ledger_accruals WHERE contract_id = 'rs'").fetchall()
    assert rows == 63 and tokens == sum(u.prompt_tokens + u.completion_tokens for u in usages)
    assert len(accruals) == 63 and sum(Decimal(a) for (a,) in accruals) == cost * Decimal("0.5")


DRAIN_S = 3


def _drain_config(drain: float, audit_dir: Path | None = None):
    """Three groups (slow, fast, stuck) on one simulator; recorded (storage, audit) if `audit_dir`."""
    recorded = {"storage": database_env(), "audit": audit(audit_dir)} if audit_dir is not None else {}

    def for_url(url: str) -> dict:
        names = ("slow", "fast", "stuck")
        return config(
            **recorded,
            server=api_keys("MH_TEST_CLIENT", drain_timeout_s=drain),
            providers={"oa": simulated("openai", url)},
            deployments={n: deployment("oa", f"m-{n}", price=PRICE) for n in names},
            model_groups={n: group(n, retries=0) for n in names},
        )

    return for_url


@contextlib.contextmanager
def _serving(tmp_path, config_for, env: dict[str, str], *extra: str):
    """A simulator and a gateway in front of it (`config_for(simulator_url)`), both stopped however the test ends."""
    sim = Simulator("openai", "oa")
    gw = None
    try:
        gw = Gateway(config_for(sim.url), tmp_path, {"MH_TEST_CLIENT": "client-key", **env}, *extra)
        yield sim, gw
    finally:
        if gw is not None:
            gw.stop()
        sim.stop()


def _stopped(gw: Gateway, within_s: float) -> str:
    """SIGTERM, then the process's stderr once it exited (a clean stop) within `within_s`."""
    gw.popen.send_signal(signal.SIGTERM)
    gw.popen.wait(within_s)
    stderr = gw.stop()
    # uvicorn re-raises the signal once its graceful shutdown is done: -SIGTERM is a clean stop.
    assert gw.popen.returncode in (0, -signal.SIGTERM), stderr
    assert "Traceback" not in stderr, stderr
    return stderr


def _wait_for(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _read_stream(stream, got: list) -> None:
    for item in stream:
        got.append(item)


def _outcome(fn):
    try:
        return fn()
    except Exception as exc:  # the test asserts on what the SDK raised
        return exc


def test_calls_open_at_the_drain_deadline_end_with_an_error_the_sdks_raise_and_are_recorded(tmp_path, sqlite_database):
    db, audit = tmp_path / "m.db", tmp_path / "audit"
    env = {"MH_TEST_DB": sqlite_database(db.name)}
    chunks, events, fast = [], [], []
    with _serving(tmp_path, _drain_config(DRAIN_S, audit), env) as (sim, gw):
        sim.fault(chunks=400, chunk_delay_ms=50, match="m-slow")  # a 20 s stream: far past the deadline
        sim.fault(chunks=6, chunk_delay_ms=100, match="m-fast")  # well inside it
        sim.fault(latency_ms=60_000, match="m-stuck")  # a unary call the upstream is still working on
        oa = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=60)
        an = anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0, timeout=60)
        with ThreadPoolExecutor(4) as pool:
            slow_oa = pool.submit(
                _outcome,
                lambda: _read_stream(oa.chat.completions.create(model="slow", messages=USER, stream=True), chunks),
            )
            slow_an = pool.submit(
                _outcome,
                lambda: _read_stream(
                    an.messages.create(model="slow", max_tokens=1000, messages=USER, stream=True), events
                ),
            )
            stuck = pool.submit(_outcome, lambda: oa.chat.completions.create(model="stuck", messages=USER))
            _wait_for(lambda: len(chunks) > 2 and len(events) > 2, "both slow streams to be under way")
            short = pool.submit(
                _outcome,
                lambda: _read_stream(oa.chat.completions.create(model="fast", messages=USER, stream=True), fast),
            )
            _wait_for(lambda: fast, "the short stream's first chunk")
            # Exits shortly after the deadline, not after uvicorn's own backstop and a cancel.
            _stopped(gw, within_s=DRAIN_S + 10)
            slow_oa, slow_an, stuck, short = (f.result(timeout=30) for f in (slow_oa, slow_an, stuck, short))

    # Not a silent truncation or a dropped connection: an error event each SDK raises.
    assert isinstance(slow_oa, openai.APIError) and not isinstance(slow_oa, openai.APIConnectionError), repr(slow_oa)
    assert slow_oa.code == "gateway_shutting_down" and f"drain deadline ({DRAIN_S}s)" in slow_oa.message
    assert isinstance(slow_an, anthropic.APIStatusError), repr(slow_an)
    assert f"drain deadline ({DRAIN_S}s)" in str(slow_an)
    assert 2 < len(chunks) < 400
    assert isinstance(stuck, openai.InternalServerError) and stuck.status_code == 503, repr(stuck)
    assert stuck.code == "gateway_shutting_down"
    assert short is None and fast[-1].choices[0].finish_reason == "stop", "a call inside the deadline completes"

    # Each is metered and audited before the process exits.
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT model_group, outcome, status, completion_tokens, cost_nanos FROM usage_calls"
        ).fetchall()
    recorded = sorted((g, o, s) for g, o, s, _, _ in rows)
    assert recorded == [
        ("fast", "ok", 200),
        ("slow", "stream_error", 200),
        ("slow", "stream_error", 200),
        ("stuck", "cancelled", 503),
    ], rows
    assert all(tokens > 0 and nanos > 0 for g, _, _, tokens, nanos in rows if g == "slow"), (
        "what was produced is billed"
    )
    calls = [e["body"] for _, e in AuditReader(str(audit)).iter_events(Filters(kind="call"))]
    assert sorted((c["model_group"], c["outcome"]) for c in calls) == [(g, o) for g, o, _ in recorded]


def test_an_idle_gateway_exits_at_once_whatever_its_drain_deadline(tmp_path, sqlite_database):
    db = tmp_path / "m.db"
    env = {"MH_TEST_DB": sqlite_database(db.name)}
    with _serving(tmp_path, _drain_config(600, tmp_path / "audit"), env) as (sim, gw):
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=30)
        for _ in range(3):  # the client keeps its connection open, idle
            client.chat.completions.create(model="fast", messages=USER)
        _stopped(gw, within_s=5)  # generous for a busy machine; the 600 s deadline plays no part
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM usage_calls").fetchone() == (3,)


def test_workers_drain_with_the_flags_deadline(tmp_path):
    chunks: list = []
    with _serving(tmp_path, _drain_config(600), {}, "--workers", "2", "--drain-timeout", "1") as (sim, gw):
        sim.fault(chunks=400, chunk_delay_ms=50, match="m-slow")
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=60)
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                _outcome,
                lambda: _read_stream(client.chat.completions.create(model="slow", messages=USER, stream=True), chunks),
            )
            _wait_for(lambda: len(chunks) > 2, "the stream to be under way")
            _stopped(gw, within_s=15)  # the flag's 1 s, not the config's 600 s, reached each worker
            result = slow.result(timeout=30)
    assert isinstance(result, openai.APIError) and result.code == "gateway_shutting_down", repr(result)
    assert "drain deadline (1s)" in result.message


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_second_stop_signal_ends_what_is_open_at_once_and_still_writes_every_row(tmp_path, sig, sqlite_database):
    """Documented (docs/serving.md): the second signal brings the drain deadline forward to now. Before, a
    second SIGTERM changed nothing (the 600 s deadline held), and a second SIGINT made uvicorn skip the
    lifespan shutdown: no queued row written, the stream dropped without an error event, tracebacks, then
    a process hung on the threads nothing had stopped."""
    db = tmp_path / "m.db"
    env = {"MH_TEST_DB": sqlite_database(db.name)}  # at the head revision: the start does not migrate

    def held(url: str) -> dict:  # usage rows wait in memory for shutdown
        return {**_drain_config(600, tmp_path / "audit")(url), "metering": {"writer": {"flush_interval_ms": 60000}}}

    chunks: list = []
    with _serving(tmp_path, held, env) as (sim, gw):
        sim.fault(chunks=4000, chunk_delay_ms=50, match="m-slow")
        sim.fault(latency_ms=600_000, match="m-stuck")
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=60)
        client.chat.completions.create(model="fast", messages=USER)
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(
                _outcome,
                lambda: _read_stream(client.chat.completions.create(model="slow", messages=USER, stream=True), chunks),
            )
            stuck = pool.submit(_outcome, lambda: client.chat.completions.create(model="stuck", messages=USER))
            _wait_for(lambda: len(chunks) > 2, "the stream to be under way")
            _wait_for(lambda: sim.stats()["requests"] >= 3, "the stuck call to reach the provider")
            gw.popen.send_signal(sig)
            _wait_for(lambda: "draining 2 open call(s)" in gw.output(), "the drain to begin")
            gw.popen.send_signal(sig)
            gw.popen.wait(30)  # generous for a busy machine; the drain deadline is 600 s
            log = gw.stop()
            slow, stuck = slow.result(timeout=30), stuck.result(timeout=30)
    assert gw.popen.returncode in (0, -signal.SIGTERM), log
    assert "Traceback" not in log and " ERROR " not in log, log
    assert "a second stop signal: ending 2 open call(s) now" in log, log
    assert isinstance(slow, openai.APIError) and not isinstance(slow, openai.APIConnectionError), repr(slow)
    assert slow.code == "gateway_shutting_down" and "second stop signal" in slow.message, slow.message
    assert isinstance(stuck, openai.InternalServerError) and stuck.status_code == 503, repr(stuck)
    assert stuck.code == "gateway_shutting_down" and "second stop signal" in stuck.message
    with sqlite3.connect(db) as conn:  # written at shutdown, not left in the spool for the next start
        rows = sorted(conn.execute("SELECT model_group, outcome FROM usage_calls").fetchall())
    assert rows == [("fast", "ok"), ("slow", "stream_error"), ("stuck", "cancelled")], rows


def test_workers_pass_a_second_stop_signal_on(tmp_path):
    """`--workers`: the supervisor passes the second signal on to each worker while they drain."""
    chunks: list = []
    with _serving(tmp_path, _drain_config(600), {}, "--workers", "2") as (sim, gw):
        sim.fault(chunks=4000, chunk_delay_ms=50, match="m-slow")
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=60)
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                _outcome,
                lambda: _read_stream(client.chat.completions.create(model="slow", messages=USER, stream=True), chunks),
            )
            _wait_for(lambda: len(chunks) > 2, "the stream to be under way")
            gw.popen.send_signal(signal.SIGTERM)
            _wait_for(lambda: "draining 1 open call(s)" in gw.output(), "the drain to begin")
            gw.popen.send_signal(signal.SIGTERM)
            gw.popen.wait(30)  # generous for a busy machine; the drain deadline is 600 s
            log = gw.stop()
            result = slow.result(timeout=30)
    assert "Traceback" not in log, log
    assert isinstance(result, openai.APIError) and result.code == "gateway_shutting_down", repr(result)
    assert "second stop signal" in result.message
