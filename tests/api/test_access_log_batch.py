"""The access log writes the lines of one event-loop tick together: one write per stream, every line
intact and in the order the calls ended, at the end of the tick."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from multihome.api import access_log
from multihome.api.pipeline import Call

pytestmark = pytest.mark.anyio


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


@pytest.fixture
def captured():
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("multihome.access")
    saved = (log.level, log.propagate)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    yield stream
    log.removeHandler(handler)
    log.setLevel(saved[0])
    log.propagate = saved[1]


def ended(i: int, status: int = 200) -> Call:
    call = Call({"method": "POST", "raw_path": b"/v1/chat/completions", "path": "/v1/chat/completions"}, b"req_%d" % i)
    call.group, call.status = "gpt-4o", status
    return call


async def test_one_write_per_tick_with_every_line_in_order(captured):
    for i in range(5):
        access_log.write(ended(i, 200 + i))
    assert captured.writes == 0  # not yet: at the end of the tick
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    lines = captured.getvalue().splitlines()
    assert captured.writes == 1
    assert [line.split("request_id=")[1].split()[0] for line in lines] == [f"req_{i}" for i in range(5)]
    assert lines[3].startswith("INFO POST /v1/chat/completions 203 ") and "model_group=gpt-4o deployment=-" in lines[3]


async def test_each_tick_gets_its_own_write(captured):
    access_log.write(ended(1))
    await asyncio.sleep(0.01)
    access_log.write(ended(2))
    await asyncio.sleep(0.01)
    assert captured.writes == 2 and len(captured.getvalue().splitlines()) == 2


def test_without_a_running_loop_the_line_is_written_at_once(captured):
    access_log.write(ended(7))
    assert captured.writes >= 1 and "request_id=req_7" in captured.getvalue()


def test_a_line_record_holds_what_make_record_gives_with_its_own_time_and_arguments():
    log = logging.getLogger("multihome.access")
    args = ("POST", "/v1/chat/completions", 200, 1.5, "req_1", "-", "-", "g", "d")
    made = vars(log.makeRecord(log.name, logging.INFO, access_log.__file__, 0, access_log._LINE, args, None))
    first, second = access_log._record(args), access_log._record(("GET",) + args[1:])
    mine = vars(first)
    assert set(mine) == set(made)
    same = {k for k in made if k not in ("created", "msecs", "relativeCreated")}
    assert {k: mine[k] for k in same} == {k: made[k] for k in same}
    assert abs(mine["created"] - made["created"]) < 60 and second.args[0] == "GET" and first.args[0] == "POST"
    assert first.getMessage().startswith("POST /v1/chat/completions 200 1.5ms request_id=req_1")


def test_text_lines_carry_the_time_to_the_millisecond():
    from multihome.observability.logs import TextFormatter

    formatter = TextFormatter("%(asctime)s %(message)s")
    record = logging.LogRecord("x", logging.INFO, "f", 1, "hello", (), None)
    assert formatter.format(record) == logging.Formatter("%(asctime)s %(message)s").format(record)
    record.created += 1.25
    record.msecs = int((record.created - int(record.created)) * 1000) + 0.0
    assert formatter.format(record) == logging.Formatter("%(asctime)s %(message)s").format(record)


@pytest.fixture
def serve_format():
    """The access logger as `multihome serve` sets it up: a stream handler with serve's text format."""
    from multihome.observability.logs import _FORMAT, TextFormatter

    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(_FORMAT))
    log = logging.getLogger("multihome.access")
    saved = (log.level, log.propagate)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    yield stream, handler
    log.removeHandler(handler)
    log.setLevel(saved[0])
    log.propagate = saved[1]


ARGS = [
    ("POST", "/v1/chat/completions", 200, 12.345, "req_1", "env:KEY", "default", "gpt-4o", "az-main"),
    ("GET", "'/v1/x\\x00'", 499, 0.04999, "req_2", "-", "-", "-", "-"),
    ("DELETE", "/admin/v1/keys/k", 404, 1234567.25, "req_3", "key_a", "ten_a", "-", "-"),
]


def test_the_line_text_is_the_format_of_its_arguments():
    for args in ARGS:
        assert access_log._message(args) == access_log._LINE % args


def test_serve_format_lines_are_written_without_records_and_read_as_the_formatter_writes_them(
    serve_format, monkeypatch
):
    from multihome.observability.logs import _FORMAT

    stream, handler = serve_format
    now = 1764763200.0 + 0.987654
    monkeypatch.setattr(access_log.time, "time", lambda: now)
    expected = []
    for args in ARGS:
        record = access_log._record(args, now)
        expected.append(logging.Formatter(_FORMAT).format(record))
    monkeypatch.setattr(handler.formatter, "format", None)  # the direct path formats no record
    for args in ARGS:
        access_log._pending.append((now, args))
    access_log.flush()
    assert stream.getvalue().splitlines() == expected and stream.writes == 1


def test_a_handler_with_a_filter_still_gets_records(serve_format):
    stream, handler = serve_format
    seen = []
    handler.addFilter(lambda record: seen.append(record.args[4]) or record.args[4] != "req_2")
    for i in (1, 2, 3):
        access_log.write(ended(i))
    lines = stream.getvalue().splitlines()
    assert seen == ["req_1", "req_2", "req_3"] and [line.split("request_id=")[1].split()[0] for line in lines] == [
        "req_1",
        "req_3",
    ]


def test_a_line_is_flushed_on_the_loop_the_caller_gives(captured):
    class Loop:  # records what is scheduled on it
        def __init__(self) -> None:
            self.soon: list = []

        def call_soon(self, fn) -> None:
            self.soon.append(fn)

    loop = Loop()
    access_log.write(ended(3), loop)  # type: ignore[arg-type]
    assert captured.writes == 0 and len(loop.soon) == 1
    loop.soon[0]()
    assert captured.writes == 1 and "request_id=req_3" in captured.getvalue()
