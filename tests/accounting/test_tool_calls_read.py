"""A unary answer's tool calls are looked for only when a sink reads them: a sink that says per call
whether it does (`reads_tool_calls`: metering, true only while a MeteredSink listens) is handed none
while it does not; it and every other sink get the answer's calls, as the answer names them, otherwise."""

from __future__ import annotations

import msgspec
import pytest

from multihome.accounting.tracker import Accounting
from multihome.routing.attempts import Attempt, Served
from multihome.schema.peek import ResponsePeek
from multihome.schema.principal import Principal

ONE_CALL = (
    b'{"choices": [{"message": {"content": null, "tool_calls": [{"id": "c1", "type": "function",'
    b' "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}],'
    b' "usage": {"prompt_tokens": 5, "completion_tokens": 3}}'
)
NO_CALL = b'{"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 5}}'
TWO_CHOICES = (
    b'{"choices": [{"message": {"content": "hi"}}, {"message": {"tool_calls": [{"id": "c2", "function":'
    b' {"name": "g"}}]}}], "usage": {"prompt_tokens": 5}}'
)
RESPONSES = b'{"output": [{"type": "function_call", "name": "h", "call_id": "c3"}], "usage": {"input_tokens": 5}}'


class _Adapter:
    kind = "openai"


class _Dep:
    name, provider, region, data_zone, adapter = "d@p", "p", None, None, _Adapter()


class Facts:
    """A sink handed the finished call's facts; `reads` None: it does not say (it reads them)."""

    def __init__(self, reads: bool | None) -> None:
        if reads is not None:
            self.reads_tool_calls = reads
        self.calls: list[tuple] = []

    def record_call(self, *facts) -> None:
        self.calls.append(facts)


def finished(answer: bytes, *sinks: Facts) -> list:
    """Each sink's tool calls of a unary answer, finished as the front door does (finish_produced)."""
    tracker = Accounting([*sinks]).begin("r1", "chat", Principal(tenant="t", subject="k", source="api_key"), b"{}")
    served = Served(
        _Dep(), 200, [Attempt("d@p", "ok", 1.0)], body=answer, peek=msgspec.json.decode(answer, type=ResponsePeek)
    )
    tracker.finish_produced(served, 200, "ok")
    return [list(sink.calls[0][11]) for sink in sinks]


@pytest.mark.parametrize(
    "answer, calls",
    [(ONE_CALL, [("f", "c1")]), (NO_CALL, []), (TWO_CHOICES, [("g", "c2")]), (RESPONSES, [("h", "c3")])],
    ids=["one call", "none", "two choices", "responses"],
)
def test_the_answers_tool_calls_reach_the_sinks_that_read_them(answer, calls):
    assert finished(answer, Facts(None)) == [calls]  # a sink that does not say
    assert finished(answer, Facts(True)) == [calls]
    assert finished(answer, Facts(True), Facts(False)) == [calls, calls]  # one reads them: each gets them


def test_none_are_looked_for_while_no_sink_reads_them(monkeypatch):
    looked: list[int] = []
    real = ResponsePeek.tool_calls
    monkeypatch.setattr(ResponsePeek, "tool_calls", lambda self: looked.append(1) or real(self))
    assert finished(ONE_CALL, Facts(False)) == [[]]
    assert looked == []
    assert finished(ONE_CALL, Facts(True)) == [[("f", "c1")]]
    assert looked == [1]


def test_metering_reads_them_only_while_a_metered_sink_listens():
    from multihome.config.metering import MeteringConfig
    from multihome.metering.prices import PriceTable
    from multihome.metering.service import Metering

    class Listener:
        def __init__(self) -> None:
            self.listening = False
            self.listening_changed = lambda: None

        def metered(self, m) -> None:
            pass

    metering = Metering(MeteringConfig(), PriceTable({}))
    assert metering.reads_tool_calls is False  # no MeteredSink: the usage row holds no tool call
    sink = Listener()
    metering.add_sink(sink)
    assert metering.reads_tool_calls is False  # one that does not listen is handed no call
    sink.listening = True
    sink.listening_changed()
    assert metering.reads_tool_calls is True  # its MeteredCall's record holds them
