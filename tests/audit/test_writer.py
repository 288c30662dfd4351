"""The writer: events on disk, futures resolved only after fsync, group commit, backpressure."""

from __future__ import annotations

import asyncio
import os
import threading

import msgspec
import pytest

from multihome.audit import AuditLog, AuditReader, Filters, verify_dir
from multihome.audit.events import AdminChange, AgentStep
from multihome.audit.keys import key_id_of, load_public_key
from multihome.audit.writer import AuditClosed, AuditUnwritable
from multihome.schema.principal import Principal

from .helpers import call, config, key_files

PRINCIPAL = Principal(tenant="ten_a", subject="key_abc", source="api_key", team="team_x", key_id="key_abc")


class GatedFsync:
    """fsync that blocks until released, so a test can look at the world before durability."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0
        self.entered = threading.Event()

    def __call__(self, fd: int) -> None:
        self.entered.set()
        if not self.gate.wait(10):
            raise OSError("test gate never opened")
        self.calls += 1
        os.fsync(fd)


class FailingOnceFsync(GatedFsync):
    """fsync whose first call fails with EIO (when `gated`, only once the gate opens); later calls sync."""

    def __init__(self, gated: bool) -> None:
        super().__init__()
        self.gated = gated
        self.failed = False

    def __call__(self, fd: int) -> None:
        if self.failed:
            os.fsync(fd)
            return
        self.failed = True
        self.entered.set()
        if self.gated and not self.gate.wait(10):
            raise OSError("test gate never opened")
        raise OSError(5, "Input/output error")


async def until_entered(gated: GatedFsync) -> None:
    for _ in range(500):  # bounded: until the writer is inside fsync
        if gated.entered.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the writer never reached fsync")


def lines(log: AuditLog) -> list[dict]:
    """The chain's events after its genesis record (seq 0)."""
    with open(os.path.join(log.dir, log.chain + ".jsonl"), "rb") as f:
        return [msgspec.json.decode(line) for line in f][1:]


def test_every_kind_is_written_chained_and_readable(tmp_path):
    _, priv, pub = key_files(tmp_path)

    async def main():
        log = AuditLog(config(tmp_path / "audit", priv))
        await log.start()
        await log.call_started("req_000001", PRINCIPAL, "gpt-4o", "chat", "a" * 64)
        log.record(call(1))
        log.record(call(2, outcome="denied", status=403, policy_code="egress_denied", deployment=None))
        await log.append(
            "admin_change",
            AdminChange(actor="admin@x", tenant="ten_a", action="key.revoke", object_type="key", object_id="key_1"),
        )
        await log.append(
            "agent_step", AgentStep(tenant="ten_a", subject="u", run_id="run_1", step=1, action="tool_call")
        )
        await log.close()
        return log

    log = asyncio.run(main())
    events = lines(log)
    assert [e["kind"] for e in events] == ["call_started", "call", "policy_denial", "admin_change", "agent_step"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert all(b["prev"] == a["hash"] for a, b in zip(events, events[1:]))
    done = events[1]["body"]
    assert done["attempts"][0] == {"deployment": "az-main", "outcome": "http_503", "ms": 2.5, "reason": "capacity"}
    assert done["tool_calls"] == [{"name": "get_weather", "id": "call_1"}]
    assert done["tokens"] == {"prompt": 12, "completion": 7, "cached": 3, "estimated": False}
    assert events[2]["body"]["policy_code"] == "egress_denied"
    report = verify_dir(str(tmp_path / "audit"), {key_id_of(load_public_key(pub)): load_public_key(pub)})
    # Without a head registry, verify passes but says what it cannot see.
    assert report.ok and [p.kind for p in report.problems] == ["no_head_registry"], [str(p) for p in report.problems]
    assert report.events == 5 and report.checkpoints == 2  # over the genesis record, and the final one at close
    denied = list(AuditReader(str(tmp_path / "audit")).iter_events(Filters(outcome="denied")))
    assert [e["body"]["request_id"] for _, e in denied] == ["req_000002"]


def test_future_resolves_only_after_fsync(tmp_path):
    gated = GatedFsync()

    async def main():
        log = AuditLog(config(tmp_path, sync="answer"), fsync=gated)
        await log.start()
        started = asyncio.ensure_future(log.call_started("req_1", PRINCIPAL, "gpt-4o", "chat", "c" * 64))
        await until_entered(gated)
        await asyncio.sleep(0.05)
        # Written but not yet fsynced: the producer has not been told "durable".
        assert not started.done()
        assert [e["body"]["request_id"] for e in lines(log)] == ["req_1"]
        gated.gate.set()
        await asyncio.wait_for(started, 5)
        assert gated.calls >= 1
        await log.close()

    asyncio.run(main())


def test_sync_interval_answers_once_written_and_fsyncs_on_its_own(tmp_path):
    # The default: `call_started` resolves when its line is in the file (a crash of the process cannot
    # lose it); the thread fsyncs within the interval although nobody waits for it.
    gated = GatedFsync()

    async def main():
        log = AuditLog(config(tmp_path, sync_interval_ms=20), fsync=gated)
        await log.start()
        started = log.call_started("req_1", PRINCIPAL, "gpt-4o", "chat", "c" * 64)
        assert await asyncio.wait_for(started, 10) == 1
        assert gated.calls == 0  # resolved before any fsync of it completed
        assert [e["body"]["request_id"] for e in lines(log)] == ["req_1"]
        await until_entered(gated)  # fsynced unasked, within the interval
        assert log.queued == 1  # still counted against max_queue until fsynced
        gated.gate.set()
        for _ in range(500):
            if log.queued == 0:
                break
            await asyncio.sleep(0.01)
        assert log.queued == 0 and gated.calls == 1
        await log.close()

    asyncio.run(main())


def test_sync_interval_still_fsyncs_before_an_append_resolves_and_does_not_wait_the_interval(tmp_path):
    gated = GatedFsync()

    async def main():
        log = AuditLog(config(tmp_path), fsync=gated)
        await log.start()
        log._interval_s = 3600.0  # the interval never runs out in this test: only an append triggers an fsync
        assert await asyncio.wait_for(log.call_started("req_1", PRINCIPAL, "gpt-4o", "chat", "c" * 64), 10) == 1
        log.record(call(1))
        change = asyncio.ensure_future(log.append("agent_step", step(1)))
        await until_entered(gated)  # at once, not after the interval
        await asyncio.sleep(0.05)
        assert not change.done()  # an admin change or agent step waits for its fsync, in either mode
        gated.gate.set()
        assert await asyncio.wait_for(change, 10) == 3
        assert log.queued == 0  # that one fsync covered the lines written before it too
        await log.close()
        return log

    log = asyncio.run(main())
    assert [e["kind"] for e in lines(log)] == ["call_started", "call", "agent_step"]


def test_sync_interval_fsync_failure_continues_on_a_new_chain(tmp_path):
    # An answer already went out for a written line; a failed fsync then fails whoever still waits
    # and opens a new chain, as in `sync: answer`.
    gated = FailingOnceFsync(gated=True)

    async def main():
        log = AuditLog(config(tmp_path, sync_interval_ms=20), fsync=gated)
        await log.start()
        first_chain = log.chain
        assert await asyncio.wait_for(log.call_started("req_1", PRINCIPAL, "gpt-4o", "chat", "c" * 64), 10) == 1
        waiting = log.append("agent_step", step(1))
        await until_entered(gated)
        gated.gate.set()
        with pytest.raises(OSError):
            await asyncio.wait_for(waiting, 10)
        assert await asyncio.wait_for(log.call_started("req_2", PRINCIPAL, "gpt-4o", "chat", "c" * 64), 10) == 1
        assert log.chain != first_chain and log.errors == 1
        await log.close()
        return log

    log = asyncio.run(main())
    assert [e["body"]["request_id"] for e in lines(log)] == ["req_2"]
    report = verify_dir(str(tmp_path))
    assert report.ok, [str(p) for p in report.problems]


def test_group_commit_uses_fewer_fsyncs_than_events(tmp_path):
    count = {"n": 0}

    def slow_fsync(fd):
        count["n"] += 1
        threading.Event().wait(0.002)
        os.fsync(fd)

    async def main():
        log = AuditLog(config(tmp_path), fsync=slow_fsync)
        await log.start()
        seqs = await asyncio.gather(
            *(
                log.append("agent_step", AgentStep(tenant="t", subject="s", run_id="r", step=i, action="x"))
                for i in range(2000)
            )
        )
        await log.close()
        return log, seqs

    log, seqs = asyncio.run(main())
    assert seqs == list(range(1, 2001))  # each future resolves with its own seq, in order
    assert len(lines(log)) == 2000
    assert count["n"] <= 2000 // 4, f"{count['n']} fsyncs for 2000 events: no group commit"


def test_full_queue_makes_producers_wait_and_drops_nothing(tmp_path):
    gated = GatedFsync()

    async def main():
        log = AuditLog(config(tmp_path, max_queue=8, max_batch=4), fsync=gated)
        await log.start()
        futures = [
            log.append("agent_step", AgentStep(tenant="t", subject="s", run_id="r", step=i, action="x"))
            for i in range(50)
        ]
        for i in range(10):
            log.record(call(i))
        await asyncio.sleep(0.05)
        assert log.queued == 8  # never more than max_queue in flight
        assert log.waiting == 52
        assert not any(f.done() for f in futures)
        blocked = asyncio.ensure_future(log.call_started("req_late", PRINCIPAL, "gpt-4o", "chat", "d" * 64))
        await asyncio.sleep(0.02)
        assert not blocked.done()  # call_started is held back too: that throttles new answers
        gated.gate.set()
        await asyncio.wait_for(asyncio.gather(*futures, blocked), 10)
        assert log.max_inflight == 8
        await log.close()
        return log

    log = asyncio.run(main())
    events = lines(log)
    assert len(events) == 61
    assert [e["body"]["step"] for e in events[:50]] == list(range(50))  # FIFO, nothing lost or reordered
    assert events[-1]["kind"] == "call_started"


def test_a_failed_write_fails_its_producers_and_continues_on_a_new_chain(tmp_path):
    async def main():
        log = AuditLog(config(tmp_path), fsync=FailingOnceFsync(gated=False))
        await log.start()
        first_chain = log.chain
        with pytest.raises(OSError):
            await log.append("agent_step", AgentStep(tenant="t", subject="s", run_id="r", step=1, action="x"))
        assert await log.append("agent_step", AgentStep(tenant="t", subject="s", run_id="r", step=2, action="x")) == 1
        assert log.chain != first_chain
        await log.close()

    asyncio.run(main())
    assert verify_dir(str(tmp_path)).ok


def test_unknown_kind_and_closed_log_are_refused(tmp_path):
    async def main():
        log = AuditLog(config(tmp_path))
        await log.start()
        with pytest.raises(ValueError):
            log.append("chat", {})
        await log.close()
        with pytest.raises(RuntimeError):
            log.append("agent_step", AgentStep(tenant="t", subject="s", run_id="r", step=1, action="x"))
        log.record(call(1))  # a call finishing during shutdown: counted and logged, never raised into the front door
        assert log.lost_after_close == 1

    asyncio.run(main())


def test_a_log_not_yet_started_refuses_events_as_closed(tmp_path):
    # Before start() the log had no event loop and append() failed with an AttributeError.
    log = AuditLog(config(tmp_path))
    with pytest.raises(AuditClosed):
        log.append("agent_step", AgentStep(tenant="t", subject="s", run_id="r", step=1, action="x"))


def test_no_secret_or_content_fields_in_events(tmp_path):
    async def main():
        log = AuditLog(config(tmp_path))
        await log.start()
        log.record(call(7))
        await log.append("agent_step", AgentStep(tenant="t", subject="s", run_id="r", step=1, action="x"))
        await log.close()
        return log

    body = lines(asyncio.run(main()))[0]["body"]
    assert not {"messages", "content", "api_key", "authorization", "token", "prompt"} & set(body)
    assert body["request_sha256"] == "a" * 64 and body["key_id"] == "key_ten_a"


def step(i: int) -> AgentStep:
    return AgentStep(tenant="t", subject="s", run_id="r", step=i, action="x")


def test_fsync_failing_after_later_writes_fails_every_unsynced_line_and_continues(tmp_path):
    # The loop writes while the writer thread is in fsync: when that fsync fails, the lines written
    # after it began sit in a file whose tail is unknown, so their producers fail too.
    gated = FailingOnceFsync(gated=True)

    async def main():
        log = AuditLog(config(tmp_path), fsync=gated)
        await log.start()
        first_chain = log.chain
        first = log.append("agent_step", step(1))
        await until_entered(gated)
        later = [log.append("agent_step", step(i)) for i in (2, 3)]
        await asyncio.sleep(0)  # the loop step that writes them to the old chain
        await asyncio.sleep(0)
        gated.gate.set()
        results = await asyncio.wait_for(asyncio.gather(first, *later, return_exceptions=True), 10)
        assert all(isinstance(r, OSError) for r in results), results
        assert await asyncio.wait_for(log.append("agent_step", step(4)), 10) == 1
        assert log.chain != first_chain and log.errors == 1
        assert log.queued == 0
        await log.close()
        return log

    log = asyncio.run(main())
    assert [e["body"]["step"] for e in lines(log)] == [4]
    report = verify_dir(str(tmp_path))
    assert report.ok, [str(p) for p in report.problems]


def test_a_failed_write_on_the_loop_fails_its_producers_and_continues_on_a_new_chain(tmp_path):
    async def main():
        log = AuditLog(config(tmp_path))
        await log.start()
        assert await log.append("agent_step", step(1)) == 1
        first_chain = log.chain
        full = os.open("/dev/full", os.O_WRONLY)  # a real device whose writes fail with ENOSPC
        try:
            os.dup2(full, log._wfd)
        finally:
            os.close(full)
        with pytest.raises(OSError):
            await asyncio.wait_for(log.append("agent_step", step(2)), 10)
        # Submitted while the new chain is being opened: held, then written there.
        assert await asyncio.wait_for(log.append("agent_step", step(3)), 10) == 1
        assert log.chain != first_chain and log.errors == 1
        await log.close()
        return log, first_chain

    log, first_chain = asyncio.run(main())
    assert [e["body"]["step"] for e in lines(log)] == [3]
    report = verify_dir(str(tmp_path))
    assert report.ok, [str(p) for p in report.problems]


def test_a_trail_that_cannot_open_a_chain_refuses_events_and_writes_again_once_it_can(tmp_path):
    # The directory gone (a file in its place, as root can still write a read-only one): every chain the writer
    # tried to open failed, each left an empty chain file behind, and each event failed with a bare OSError
    # the gateway answered with a 500.
    trail = tmp_path / "audit"

    async def main():
        log = AuditLog(config(trail))
        await log.start()
        assert await log.append("agent_step", step(1)) == 1
        first_chain = log.chain
        os.rename(trail, tmp_path / "away")
        trail.write_text("not a directory")
        full = os.open("/dev/full", os.O_WRONLY)  # the chain's own file fails its next write (ENOSPC)
        try:
            os.dup2(full, log._wfd)
        finally:
            os.close(full)
        for n in range(2, 6):  # the failed write, then events while no chain can be opened
            with pytest.raises(AuditUnwritable):
                await asyncio.wait_for(log.append("agent_step", step(n)), 10)
        with pytest.raises(AuditUnwritable):
            await asyncio.wait_for(log.writable(), 20)
        os.remove(trail)
        os.rename(tmp_path / "away", trail)
        # Back: the next event waits for the chain the writer opens for it, and is written there.
        await asyncio.wait_for(log.writable(), 20)  # a change waits for the chain it opens, and goes on
        assert await asyncio.wait_for(log.append("agent_step", step(6)), 10) == 1
        assert log.chain != first_chain
        await log.close()
        return log

    log = asyncio.run(main())
    assert [e["body"]["step"] for e in lines(log)] == [6]
    assert sorted(p.suffix for p in trail.iterdir()) == [".jsonl", ".jsonl"]  # the two chains, no empty ones
    report = verify_dir(str(trail))
    assert report.ok, [str(p) for p in report.problems]
