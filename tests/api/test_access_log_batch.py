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
