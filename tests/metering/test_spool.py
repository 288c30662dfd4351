"""The usage spool (metering/spool.py, replay.py): a process killed with SIGKILL loses no usage row of
a call it recorded; the next start writes them once, before budget counters are seeded from the
stored rows; a torn last line is skipped with a warning; files are let go once their rows are
committed; a live process's files and another database's files are left alone."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from multihome.config.metering import BudgetRule, MeteringConfig, SpoolConfig, WriterConfig
from multihome.metering.periods import period
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.replay import claim
from multihome.metering.row import as_row
from multihome.metering.service import Metering
from multihome.metering.spool import SUFFIX, UsageSpool, database_id
from multihome.metering.tables import usage_calls
from multihome.storage import open_store

from .conftest import Dep, call, principal

pytestmark = pytest.mark.anyio
SRC = str(Path(__file__).resolve().parents[2] / "src")
TESTS = str(Path(__file__).resolve().parents[1])
PRICES = {"dep-a": ("2.5", "10")}


def _config(spool: Path, segment_bytes: int = 8 << 20, **writer) -> MeteringConfig:
    return MeteringConfig(
        budgets=[BudgetRule(scope="key", id="key_a", amount=1000, period="day")],
        writer=WriterConfig(**writer),
        spool=SpoolConfig(dir=str(spool), segment_bytes=segment_bytes),
    )


def _metering(url: str, spool: Path, segment_bytes: int = 8 << 20, **writer) -> Metering:
    prices = PriceTable({d: DeploymentPrice.of(i, o, None, "USD") for d, (i, o) in PRICES.items()})
    return Metering(_config(spool, segment_bytes, **writer), prices, storage_url=url, spool_dir=str(spool))


async def _rows(m: Metering) -> dict[str, int]:
    async with m.engine.connect() as conn:
        return dict((await conn.execute(sa.select(usage_calls.c.request_id, usage_calls.c.cost_nanos))).all())


async def _spent(m: Metering) -> int:
    (spec,) = m.limiter.rules.budgets_for("key", "key_a", "ten_a")
    now = time.time()
    return (await m.limiter.counters.read([spec.base + period(spec.period, now).bucket], int(now * 1000)))[0]


# The child: records `total` calls, commits the first `committed` of them, then kills itself with SIGKILL
# while the rest are only in its writer's memory (and in its spool) - the flush interval is a minute.
CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    sys.path[:0] = [{src!r}, {tests!r}]
    from metering.test_spool import _metering
    from metering.conftest import Dep, call, principal

    async def main():
        m = _metering(
            {url!r}, __import__("pathlib").Path({spool!r}), {segment}, flush_interval_ms=60_000, batch_size=10_000
        )
        await m.start()
        for i in range({total}):
            await m.limiter.admit(principal(), "g", [Dep("dep-a")], 10, 10, f"req{{i}}")
            m.record(call(f"req{{i}}", prompt=100 + i, completion=50))
            if i + 1 == {committed}:
                await m.writer.flush()
        print("recorded", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


def _killed_child(url: str, spool: Path, total: int, committed: int, segment: int = 8 << 20) -> None:
    code = CHILD.format(
        src=SRC, tests=TESTS, url=url, spool=str(spool), total=total, committed=committed, segment=segment
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert "recorded" in proc.stdout


async def test_rows_of_a_killed_process_are_written_once_by_the_next_start(db_url, tmp_path):
    spool = tmp_path / "spool"
    _killed_child(db_url, spool, total=50, committed=20)
    left = sorted(p.name for p in spool.iterdir())
    assert len(left) == 1 and left[0].endswith(SUFFIX), left
    data = (spool / left[0]).read_bytes()
    # The rows were only copied into the file's shared mapping (no write()): its allocated length, the
    # header, the 30 rows not committed (the 20 committed before them were zeroed away), then NULs.
    assert len(data) == 8 << 20 and data.count(b"\n") == 1 + 30, "header + the 30 rows not committed"
    assert data.rstrip(b"\0").count(b"\0") == 0

    m = _metering(db_url, spool)
    await m.start()
    try:
        rows = await _rows(m)
        assert sorted(rows) == sorted(f"req{i}" for i in range(50)), "every recorded call once, none twice"
        # The counters in memory were seeded after the replay: spend == the stored rows' sum.
        assert await _spent(m) == sum(rows.values()) > 0
        assert [p.name for p in spool.iterdir()] == [os.path.basename(f) for f in m.writer.spool.files]
        m.record(call("after", prompt=7))  # this process's own rows go through its own file
        await m.writer.flush()
        assert len(await _rows(m)) == 51
    finally:
        await m.close()
    assert list(spool.iterdir()) == [], "a clean stop deletes its committed files"


async def test_a_running_process_writes_the_rows_another_one_left_when_it_died(tmp_path):
    """Another worker of the replica (or a replica on a shared volume) killed while this one runs."""
    url = await _sqlite(tmp_path)
    spool = tmp_path / "spool"
    m = Metering(
        MeteringConfig(spool=SpoolConfig(dir=str(spool), rescan_s=0.1)),
        PriceTable({}),
        storage_url=url,
        spool_dir=str(spool),
    )
    await m.start()
    try:
        _killed_child(url, spool, total=12, committed=0)
        deadline = time.monotonic() + 30
        while len(await _rows(m)) < 12 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert sorted(await _rows(m)) == sorted(f"req{i}" for i in range(12))
        assert [p.name for p in spool.iterdir()] == [os.path.basename(f) for f in m.writer.spool.files]
    finally:
        await m.close()


async def test_rows_spread_over_rotated_files_of_a_killed_process_are_all_written(tmp_path):
    """The mapping fills: the rows go on in the next file (made ahead), every file allocated whole."""
    url = await _sqlite(tmp_path)
    spool = tmp_path / "spool"
    _killed_child(url, spool, total=100, committed=40, segment=4096)
    left = sorted(spool.iterdir())
    assert len(left) >= 4, "~210-byte rows (~19 a file), 4 KiB files: several rotations"
    assert all(p.stat().st_size == 4096 for p in left), "each file allocated up front, none grown"
    lines = [line for p in left for line in p.read_bytes().rstrip(b"\0").split(b"\n")[1:] if line]
    assert len(lines) <= 60 + 19, "the rows committed early were let go (their files deleted)"

    m = _metering(url, spool)
    await m.start()
    try:
        assert sorted(await _rows(m)) == sorted(f"req{i}" for i in range(100)), "every call once, none twice"
        assert await _spent(m) == sum((await _rows(m)).values())
    finally:
        await m.close()
    assert list(spool.iterdir()) == []


async def test_rotation_in_process_keeps_the_order_and_makes_the_next_file_ahead(tmp_path):
    spool = UsageSpool(str(tmp_path), "db1", segment_bytes=4096)
    spool.open()
    first = spool.files[0]
    made_ahead = False
    for i in range(30):
        spool.append(_row(f"r{i}"))
        on_disk = [p for p in os.listdir(tmp_path) if not p.startswith(".")]
        made_ahead = made_ahead or len(on_disk) > len(spool.files)  # the next file exists before it is needed
    assert made_ahead
    assert len(spool.files) >= 4 and spool.files[0] == first and spool.errors == 0 and spool.down is None
    ids = []
    for f in spool.files:
        data = Path(f).read_bytes()
        assert len(data) == 4096
        ids += [msgspec.json.decode(line)[0] for line in data.rstrip(b"\0").split(b"\n")[1:] if line]
    assert ids == [f"r{i}" for i in range(30)], "in the order they were put, each once"
    assert await spool.close() == 30
    kept = sorted(tmp_path.iterdir())
    assert all(p.stat().st_size < 4096 for p in kept), "kept files are cut to their rows"
    orphans = [claim(str(p), "db1") for p in kept]
    assert [r[0] for o in orphans if o for r in o.rows] == [f"r{i}" for i in range(30)]
    for o in orphans:
        if o:
            o.release(True)


async def test_the_next_file_is_made_off_the_event_loop(tmp_path, monkeypatch):
    """Making a file (open, flock, posix_fallocate, mmap) took 0.6-2 ms on the event loop at each
    rotation: it is made in another thread while the rows go on into the current file."""
    threads: list[int] = []
    real = os.posix_fallocate

    def fallocate(fd: int, offset: int, length: int) -> None:
        threads.append(threading.get_ident())
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    loop_thread = threading.get_ident()
    spool = UsageSpool(str(tmp_path), "db1", segment_bytes=4096)
    spool.open()
    assert threads == [loop_thread]  # the first file, at start-up
    i = 0
    deadline = time.monotonic() + 60
    while len(spool.files) < 3:
        assert time.monotonic() < deadline, "rotated twice"
        spool.append(_row(f"r{i}"))
        i += 1
        making = getattr(spool, "_making", None)
        while making is not None and not making.done():
            assert time.monotonic() < deadline, "the next file made"
            await asyncio.sleep(0.01)  # the loop keeps running while the next file is made
    assert len(threads) >= 3
    assert loop_thread not in threads[1:], "no file but the first was made on the event loop's thread"
    assert spool.errors == 0 and spool.down is None
    ids = []
    for f in spool.files:
        data = Path(f).read_bytes()
        ids += [msgspec.json.decode(line)[0] for line in data.rstrip(b"\0").split(b"\n")[1:] if line]
    assert ids == [f"r{k}" for k in range(i)], "in the order they were put, each once"
    assert await spool.close() == i


async def test_a_row_cut_short_in_the_mapping_is_skipped_and_the_rest_replayed(db_url, tmp_path, caplog):
    """A kill in the middle of a row's copy: the bytes not copied yet are still NUL (the file's rest is
    zero until a row is put there), so the replay reads a prefix of that row, not a mix with old bytes."""
    spool = tmp_path / "spool"
    _killed_child(db_url, spool, total=6, committed=0)
    (path,) = spool.iterdir()
    data = bytearray(path.read_bytes())
    end = len(data.rstrip(b"\0"))
    last = data.rindex(b"\n", 0, end - 1) + 1  # where the last row starts
    data[last + 100 : end] = bytes(end - last - 100)  # its copy stopped after 100 bytes
    path.write_bytes(bytes(data))
    m = _metering(db_url, spool)
    with caplog.at_level(logging.WARNING, logger="multihome.metering.spool"):
        await m.start()
    try:
        assert sorted(await _rows(m)) == [f"req{i}" for i in range(5)]
        assert any("line 7 skipped" in r.message and "cut short" in r.message for r in caplog.records), [
            r.message for r in caplog.records
        ]
        assert not path.exists()
    finally:
        await m.close()


async def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    url = await _sqlite(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    good = UsageSpool(str(spool), database_id(url))
    good.open()
    for i in range(3):
        good.append(_row(f"req{i}"))
    path = Path(good.files[0])
    await good.close()  # unlocked, rows kept: what a dead process leaves
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the last line cut mid-write
    m = _metering(url, spool)
    with caplog.at_level(logging.WARNING, logger="multihome.metering.spool"):
        await m.start()
    try:
        assert sorted(await _rows(m)) == ["req0", "req1"]
        assert any("line 4 skipped" in r.message and "cut short" in r.message for r in caplog.records), [
            r.message for r in caplog.records
        ]
        assert not path.exists()
    finally:
        await m.close()


async def test_files_are_let_go_once_their_rows_are_committed(tmp_path):
    spool = UsageSpool(str(tmp_path), "db1", segment_bytes=4096)
    spool.open()
    for i in range(40):  # ~500 bytes a row: several files
        spool.append(_row(f"r{i}"))
    files = spool.files
    assert len(files) >= 4
    first = Path(files[0]).read_bytes().count(b"\n") - 1  # its rows, after the header
    spool.committed(first - 1)
    assert os.path.exists(files[0])
    spool.committed(1)  # the first file's rows are all in: it goes
    assert not os.path.exists(files[0]) and os.path.exists(files[1])
    other = UsageSpool(str(tmp_path), "db1")  # a live process's files are never claimed by another
    assert all(claim(f, "db1") is None for f in spool.files)
    spool.unspooled(2)  # replayed rows queued between: they hold no line here
    spool.append(_row("last"))
    spool.committed(40 - first + 2 + 1)
    (left,) = spool.files  # only the current file (the last row may have gone into the next one)
    assert left in files or left > files[-1]
    assert not any(os.path.exists(f) for f in files if f != left), "every other file is gone"
    data = Path(left).read_bytes()
    assert len(data) == 4096, "allocated up front"
    rows = data.rstrip(b"\0")
    assert rows.count(b"\n") == 1 and rows.endswith(b"\n") and b"multihome_usage_spool" in rows, (
        "zeroed back to its header: nothing after it but NUL bytes"
    )
    assert await spool.close() == 0
    assert os.listdir(tmp_path) == []
    del other


async def test_fsync_interval_syncs_off_the_loop_and_rotated_files_still_go(tmp_path):
    spool = UsageSpool(str(tmp_path), "db1", segment_bytes=4096, fsync_interval_ms=5)
    spool.open()
    rotated = 0
    for i in range(60):
        spool.append(_row(f"r{i}"))
        rotated = max(rotated, len(spool.files))
        await asyncio.sleep(0.002)  # syncs run meanwhile, some while files rotate and are let go
        if i % 20 == 19:
            spool.committed(20)
    assert rotated >= 2
    deadline = time.monotonic() + 10  # a file let go while a sync holds it goes once that sync is done
    while (spool._dirty or len(spool.files) > 1) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not spool._dirty, "the syncer ran"
    assert len(spool.files) == 1, "rotated files whose rows were committed are gone"
    assert await spool.close() == 0
    assert os.listdir(tmp_path) == []


async def test_another_databases_file_and_a_live_file_are_left_alone(tmp_path):
    url = await _sqlite(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    foreign = UsageSpool(str(spool), "someotherdb0000")
    foreign.open()
    foreign.append(_row("foreign"))
    await foreign.close()
    live = UsageSpool(str(spool), database_id(url))
    live.open()
    live.append(_row("live"))
    m = _metering(url, spool)
    await m.start()
    try:
        assert await _rows(m) == {}
        assert len(list(spool.iterdir())) == 3  # the foreign file, the live one and this process's own
    finally:
        await m.close()
        live.committed(1)
        await live.close()


async def test_a_file_of_the_earlier_format_is_replayed(db_url, tmp_path):
    """Spool files of version 1 (rows as JSON objects, datetimes as RFC 3339, `reasoning_tokens` absent
    before migration 0018) left by a process of an earlier release are written by this one."""
    import datetime as dt

    spool = tmp_path / "spool"
    spool.mkdir()
    at = dt.datetime(2026, 12, 3, 4, 5, 6, 123456, tzinfo=dt.UTC)
    old = {
        "request_id": "old0", "started_at": at, "finished_at": at, "tenant_id": "ten_a", "team_id": None,
        "key_id": "key_a", "endpoint": "chat", "model_group": "gpt-4o", "deployment": "dep-a", "provider": "prov",
        "status": 200, "outcome": "ok", "prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 0,
        "estimated": False, "latency_ms": 1.5, "cost": "0.000075", "cost_nanos": 75000, "currency": "USD",
        "price_version": "pv_test", "over_budget": False,
    }  # fmt: skip
    head = {"multihome_usage_spool": 1, "db": database_id(db_url), "pid": 1, "at": 0.0}
    lines = [head, old, old | {"request_id": "old1", "reasoning_tokens": 3}]
    (spool / f"usage-1-0000-0001{SUFFIX}").write_bytes(b"".join(msgspec.json.encode(x) + b"\n" for x in lines))
    m = _metering(db_url, spool)
    await m.start()
    try:
        async with m.engine.connect() as conn:
            rows = (await conn.execute(sa.select(usage_calls).order_by(usage_calls.c.request_id))).all()
    finally:
        await m.close()
    assert [(r.request_id, r.cost_nanos, r.reasoning_tokens) for r in rows] == [("old0", 75000, 0), ("old1", 75000, 3)]
    assert all((r.started_at if r.started_at.tzinfo else r.started_at.replace(tzinfo=dt.UTC)) == at for r in rows)
    assert list(spool.iterdir()) == []


async def _sqlite(tmp_path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'u.db'}"
    store = await open_store(url, migrate=True)
    await store.close()
    return url


def _row(request_id: str) -> tuple:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    return as_row(
        {
            "request_id": request_id,
            "started_at": now,
            "finished_at": now,
            "tenant_id": "ten_a",
            "team_id": None,
            "key_id": "key_a",
            "endpoint": "chat",
            "model_group": "gpt-4o-" + "m" * 160,  # ~500 bytes a row: a 4 KiB file holds ~7
            "deployment": "dep-a",
            "provider": "prov-" + "p" * 160,
            "status": 200,
            "outcome": "ok",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cached_tokens": 0,
            "estimated": False,
            "latency_ms": 1.5,
            "cost": "0.0000750",
            "cost_nanos": 75000,
            "currency": "USD",
            "price_version": "pv_test",
            "over_budget": False,
        }
    )


__all__ = ["Dep", "principal"]
