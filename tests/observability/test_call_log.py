"""The call log after a kill: a process killed mid-append leaves the file's last line cut short; the next
process's first record starts a line of its own instead of being glued onto it (one bad line for a log
shipper, every record of the restarted process readable)."""

from __future__ import annotations

import json

import pytest

from multihome.accounting.record import CallRecord
from multihome.observability.call_log import CallLog

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def call(request_id: str) -> CallRecord:
    return CallRecord(
        request_id=request_id,
        started_at=1000.0,
        finished_at=1000.5,
        endpoint="chat",
        tenant="acme",
        subject="alice",
        principal_source="api_key",
        model_group="g",
        status=200,
        outcome="ok",
    )


async def logged(path, *ids: str) -> None:
    log = CallLog(str(path))
    await log.start()
    for rid in ids:
        log.record(call(rid))
    await log.close()


async def test_a_torn_last_line_stays_alone_and_the_next_process_records_read_whole(tmp_path):
    path = tmp_path / "calls.jsonl"
    await logged(path, "req_1")
    whole = path.read_bytes()
    path.write_bytes(whole + whole[: len(whole) // 2])  # killed in the middle of its next append
    await logged(path, "req_2", "req_3")
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and json.loads(lines[0])["request_id"] == "req_1"
    with pytest.raises(ValueError):
        json.loads(lines[1])  # the torn line, alone
    assert [json.loads(line)["request_id"] for line in lines[2:-1]] == ["req_2", "req_3"]


async def test_a_whole_file_gets_no_empty_line(tmp_path):
    path = tmp_path / "calls.jsonl"
    await logged(path, "req_1")
    await logged(path, "req_2")
    assert [json.loads(line)["request_id"] for line in path.read_text().splitlines()] == ["req_1", "req_2"]


async def test_close_lets_the_batch_being_appended_finish_first(tmp_path, monkeypatch):
    # close() cancelled the writer task mid-append: the batch's thread appended on while close() appended the
    # rest from another thread, so close() returned before the file had the earlier records (and they landed
    # after the later ones).
    import asyncio
    import threading
    import time

    path = tmp_path / "calls.jsonl"
    appending = threading.Event()
    real = CallLog._append

    def slow_append(self, data: bytes) -> None:  # a disk that takes a while with the first batch
        if b"req_early" in data:
            appending.set()
            time.sleep(0.5)
        real(self, data)

    monkeypatch.setattr(CallLog, "_append", slow_append)
    log = CallLog(str(path))
    await log.start()
    log.record(call("req_early"))
    assert await asyncio.to_thread(appending.wait, 10)
    log.record(call("req_late"))
    await log.close()
    ids = [json.loads(line)["request_id"] for line in path.read_bytes().splitlines()]
    assert ids == ["req_early", "req_late"]
