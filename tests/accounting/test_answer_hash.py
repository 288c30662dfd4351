"""A unary answer's SHA-256 is made only when something records it (the call record, the audit trail)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from multihome.accounting.tracker import Accounting
from multihome.api import pipeline
from multihome.api.pipeline import Call, finish_unary
from multihome.schema.principal import Principal

WHO = Principal(tenant="t", subject="s", source="api_key", key_id="k")
SENT = b'{"id":"x","choices":[]}'


class Sink:
    def __init__(self) -> None:
        self.records: list = []

    def record(self, call) -> None:
        self.records.append(call)


def _served():
    dep = SimpleNamespace(name="d@p", provider="p", region=None, data_zone=None, adapter=SimpleNamespace(kind="openai"))
    attempt = SimpleNamespace(deployment="d@p", outcome="ok", ms=1.0, reason=None)
    return SimpleNamespace(deployment=dep, status=200, attempts=[attempt], stream=None, peek=None)


def _finish(acc: Accounting) -> None:
    tracker = acc.begin("r1", "chat", WHO, b"{}")
    assert tracker is not None
    call = Call({}, b"r1")
    call.tracker = tracker
    finish_unary(call, _served(), SENT)


def test_a_record_holds_the_answers_hash():
    sink = Sink()
    _finish(Accounting([sink]))
    (record,) = sink.records
    assert record.response_sha256 == hashlib.sha256(SENT).hexdigest()


def test_metrics_alone_hash_no_answer(monkeypatch: pytest.MonkeyPatch):
    seen: list = []
    acc = Accounting()
    acc.observer = lambda tracker, status, outcome, *rest: seen.append((status, outcome))

    def no_hash(*args):
        raise AssertionError("the answer was hashed for no record")

    monkeypatch.setattr(pipeline.hashlib, "sha256", no_hash)
    _finish(acc)
    assert seen == [(200, "ok")]


class Unhashed(Sink):
    hashes = False  # as metering: reads no hash of the record


def test_sinks_that_read_no_hash_get_none_and_nothing_is_hashed(monkeypatch: pytest.MonkeyPatch):
    from multihome.accounting import tracker as tracker_module

    def no_hash(*args):
        raise AssertionError("hashed for no reader")

    monkeypatch.setattr(pipeline.hashlib, "sha256", no_hash)
    monkeypatch.setattr(tracker_module.hashlib, "sha256", no_hash)
    unhashed = Unhashed()
    acc = Accounting([unhashed])
    _finish(acc)
    (record,) = unhashed.records
    assert (record.request_sha256, record.response_sha256) == ("", None)
    monkeypatch.undo()
    # A sink that reads them, added later (as app.py appends the call log, telemetry, the audit trail):
    # from the next call on both are made again, for every sink.
    reader = Sink()
    acc.sinks.append(reader)
    _finish(acc)
    assert reader.records[0].response_sha256 == hashlib.sha256(SENT).hexdigest()
    assert unhashed.records[1].request_sha256 == hashlib.sha256(b"{}").hexdigest()


def test_a_sink_replaced_by_one_that_reads_the_hashes_gets_them():
    unhashed, reader = Unhashed(), Sink()
    acc = Accounting([unhashed])
    _finish(acc)
    acc.sinks[0] = reader  # as many sinks as before, another one
    _finish(acc)
    assert unhashed.records[0].response_sha256 is None
    assert reader.records[0].response_sha256 == hashlib.sha256(SENT).hexdigest()
