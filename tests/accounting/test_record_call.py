"""The finish path without a CallRecord (CallTracker.finish -> each sink's `record_call`, accounting.CallFacts)
says exactly what the record path says: the same usage row, the same budget and limit counters, the same
audit event; and a sink that needs the record still gets the very record."""

from __future__ import annotations

import asyncio
import os
import time

import msgspec
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from multihome.accounting.record import CallRecord
from multihome.accounting.tracker import Accounting
from multihome.audit import AuditLog
from multihome.audit.rows import call_body
from multihome.config.audit import AuditConfig
from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
from multihome.metering.counters import LocalCounters
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.service import Metering
from multihome.metering.tables import usage_calls
from multihome.metering.writer import UsageWriter
from multihome.routing.attempts import Attempt, Served
from multihome.schema.peek import CompletionDetails, PromptDetails
from multihome.schema.peek import Usage as Reported
from multihome.schema.principal import Principal

NOW = time.time()
PRICES = PriceTable({"d@p": DeploymentPrice.of(1.0, 2.0, 0.5, "USD")})


class Facts:
    """A sink that keeps what `record_call` is handed (and is never handed a record)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def record(self, call: CallRecord) -> None:
        raise AssertionError("every sink has record_call: no record is made")

    def record_call(self, *facts) -> None:
        self.calls.append(facts)


class _Adapter:
    kind = "openai"


class Dep:
    """The fields of routing.catalog.DeploymentRuntime the record and the limiter read."""

    name, provider, adapter, region, data_zone, max_output_tokens = "d@p", "p", _Adapter(), "reg", "zone", None


USAGE = Reported(
    prompt_tokens=1200,
    completion_tokens=300,
    prompt_tokens_details=PromptDetails(cached_tokens=200),
    completion_tokens_details=CompletionDetails(reasoning_tokens=40),
)
TWO = [Attempt("other", "http_503", 1.23456, "busy"), Attempt("d@p", "ok", 2.0004999)]


def _served(**kw) -> Served:
    return Served(Dep(), kw.pop("status", 200), kw.pop("attempts", TWO), **kw)


# How each call ends: (the tracker -> finish it), as the front door would.
ENDINGS = {
    "ok": lambda t: t.finish(
        200, "ok", served=_served(), usage=USAGE, tool_calls=[("f", "c1"), ("g", "c2")], response_sha256="b" * 64
    ),
    "one attempt, streamed": lambda t: t.finish(
        200,
        "stream_error",
        served=_served(attempts=[Attempt("d@p", "ok", 7.5)]),
        usage=None,
        content_chars=90,
        first_byte_ms=3.25,
    ),
    "denied": lambda t: t.finish(429, "denied", error_code="budget_exceeded"),
    "declined": lambda t: t.finish(503, "declined", error_code="all_deployments_failed", attempts=TWO),
    "cancelled after an answer": lambda t: t.finish(499, "cancelled", served=_served(), usage=USAGE),
    "a client error passed through": lambda t: t.finish(400, "client_error", served=_served(status=400)),
}


def _facts(ending: str, team: str | None) -> tuple:
    sink = Facts()
    who = Principal(tenant="ten", subject="sub", source="api_key", team=team, key_id="key_1")
    tracker = Accounting([sink]).begin("req_1", "chat", who, b'{"x": 1}')
    assert tracker is not None
    tracker.model_group, tracker.policy_code, tracker.entitlement_id = "grp", "pol", "ent"
    tracker.request = None
    ENDINGS[ending](tracker)
    (facts,) = sink.calls
    return facts


async def _metering(admit_for: Principal | None = None, listening=None) -> Metering:
    cfg = MeteringConfig(
        budgets=[BudgetRule(scope="key", id="*", amount="100", period="day")],
        rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=1000, tokens_per_minute=10**6)],
    )
    m = Metering(cfg, PRICES, counters=LocalCounters(), clock=lambda: NOW)
    m.writer = UsageWriter(create_async_engine("sqlite+aiosqlite://"), usage_calls)  # never started: rows stay queued
    if listening is not None:
        m.add_sink(listening)
    if admit_for is not None:
        ticket = m.limiter.at_once(admit_for, "grp", [Dep()], 1000, 500, "req_1", 1)
        assert ticket is not None and ticket.reserved
    return m


@pytest.mark.parametrize("team", [None, "team_x"])
@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_the_audit_event_is_the_records(ending, team, tmp_path):
    tracker, *facts = _facts(ending, team)

    async def write() -> AuditLog:
        log = AuditLog(AuditConfig(dir=str(tmp_path), fsync=False))
        await log.start()
        log.record_call(tracker, *facts)
        await log.close()
        return log

    log = asyncio.run(write())
    with open(os.path.join(log.dir, log.chain + ".jsonl"), "rb") as f:
        line = msgspec.json.decode(f.read().splitlines()[-1], type=_Event)
    assert (line.kind.encode(), bytes(line.body)) == call_body(tracker.record_of(*facts))


class _Event(msgspec.Struct):
    kind: str
    body: msgspec.Raw


@pytest.mark.anyio
@pytest.mark.parametrize("admitted", [True, False])
@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_the_usage_row_and_the_counters_are_the_records(ending, admitted):
    tracker, *facts = _facts(ending, None)
    who = tracker.principal if admitted else None
    by_record, by_facts = await _metering(who), await _metering(who)
    by_record.record(tracker.record_of(*facts))
    by_facts.record_call(tracker, *facts)
    assert by_facts.writer is not None and by_record.writer is not None
    assert list(by_facts.writer.rows) == list(by_record.writer.rows) and len(by_facts.writer.rows) == 1
    assert by_facts.limiter.counters._v == by_record.limiter.counters._v  # type: ignore[attr-defined]
    assert not by_facts.limiter.open and not by_record.limiter.open
    assert by_facts.recorded == by_record.recorded == 1


@pytest.mark.anyio
async def test_the_usual_settlement_is_the_general_one():
    # One budget + one tokens-per-minute limit: Ticket.settle's shortcut, against its general path.
    tracker, *facts = _facts("ok", None)
    shortcut, general = await _metering(tracker.principal), await _metering(tracker.principal)
    ticket = general.limiter.open["req_1"]
    assert ticket._slots.pair is not None
    ticket._slots = ticket._slots.copy()
    ticket._slots.pair = None
    shortcut.record_call(tracker, *facts)
    general.record_call(tracker, *facts)
    assert shortcut.limiter.counters._v == general.limiter.counters._v  # type: ignore[attr-defined]
    assert any(v for v in shortcut.limiter.counters._v.values())  # type: ignore[attr-defined]


class Listening:
    listening = True

    def __init__(self) -> None:
        self.calls: list = []

    def metered(self, m) -> None:
        self.calls.append(m)


@pytest.mark.anyio
async def test_a_listening_metered_sink_gets_the_very_record():
    tracker, *facts = _facts("ok", "team_x")
    sink = Listening()
    m = await _metering(listening=sink)
    m.record_call(tracker, *facts)
    (metered,) = sink.calls
    assert metered.call == tracker.record_of(*facts)
    assert metered.charged and metered.currency == "USD"


def test_no_record_is_made_only_when_every_sink_takes_the_facts():
    class Both:
        def __init__(self) -> None:
            self.records: list[CallRecord] = []
            self.facts: list[tuple] = []

        def record(self, call: CallRecord) -> None:
            self.records.append(call)

        def record_call(self, *facts) -> None:
            self.facts.append(facts)

    class RecordOnly:
        def __init__(self) -> None:
            self.records: list[CallRecord] = []

        def record(self, call: CallRecord) -> None:
            self.records.append(call)

    both, plain = Both(), RecordOnly()
    acc = Accounting([both])
    who = Principal(tenant="ten", subject="sub", source="api_key")
    ENDINGS["ok"](acc.begin("req_1", "chat", who, b"{}"))
    assert [f[0].request_id for f in both.facts] == ["req_1"] and both.records == []
    acc.sinks.append(plain)  # a sink without record_call: from now on a record, for every sink
    ENDINGS["ok"](acc.begin("req_2", "chat", who, b"{}"))
    assert len(both.facts) == 1
    assert [r.request_id for r in both.records] == [r.request_id for r in plain.records] == ["req_2"]


@pytest.mark.parametrize("ending", ["ok", "denied"])
def test_the_audit_log_writes_the_same_event_either_way(tmp_path, ending):
    import asyncio
    import os

    import msgspec

    from audit.helpers import config
    from multihome.audit import AuditLog, verify_dir

    tracker, *facts = _facts(ending, "team_x")

    async def main() -> AuditLog:
        log = AuditLog(config(tmp_path))
        await log.start()
        log.record(tracker.record_of(*facts))
        log.record_call(tracker, *facts)
        await log.close()
        return log

    log = asyncio.run(main())
    with open(os.path.join(log.dir, log.chain + ".jsonl"), "rb") as f:
        by_record, by_facts = (msgspec.json.decode(line) for line in f.read().splitlines()[-2:])
    assert by_record["kind"] == by_facts["kind"] == ("policy_denial" if ending == "denied" else "call")
    assert by_record["body"] == by_facts["body"] and by_facts["body"]["request_id"] == "req_1"
    assert verify_dir(str(tmp_path)).ok
