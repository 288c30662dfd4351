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
