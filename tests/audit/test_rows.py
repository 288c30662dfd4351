"""The per-call bodies written without sorting (rows.py) and the writer's envelope template are byte for
byte the canonical form: the sorted encoding of the documented structs (events.py)."""

from __future__ import annotations

import asyncio
import os

import msgspec
import pytest

from multihome.accounting.record import AttemptRecord, CallRecord, Usage
from multihome.audit import AuditLog, verify_dir
from multihome.audit.events import (
    AgentStep,
    Attempt,
    CallEvent,
    CallStarted,
    EventCore,
    PolicyDenial,
    Tokens,
    ToolCall,
    canonical,
    seal,
)
from multihome.audit.rows import (
    AttemptRow,
    CallRow,
    DenialRow,
    StartedRow,
    TokensRow,
    ToolCallRow,
    call_body,
    started_body,
)
from multihome.schema.principal import Principal

from .helpers import call, config, documented


def reference(rec: CallRecord) -> tuple[bytes, bytes]:
    body = documented(rec)
    return (b"policy_denial" if isinstance(body, PolicyDenial) else b"call"), canonical(body)


def test_rows_declare_their_fields_sorted_and_name_the_documented_ones():
    for row, doc in (
        (StartedRow, CallStarted),
        (CallRow, CallEvent),
        (DenialRow, PolicyDenial),
        (TokensRow, Tokens),
        (ToolCallRow, ToolCall),
        (AttemptRow, Attempt),
    ):
        assert list(row.__struct_fields__) == sorted(doc.__struct_fields__), row.__name__


ODD = 'tenant "quoted" \\ back, naïve ✓, \x01 control, \u2028 sep'


@pytest.mark.parametrize(
    "rec",
    [
        call(1),
        call(2, outcome="denied", status=403, policy_code="egress_denied", deployment=None),
        # Nothing optional: no usage, no tool calls, no team; integral and exponent-form numbers.
        msgspec.structs.replace(
            call(3),
            usage=None,
            attempts=(AttemptRecord("d", "timeout", 3),),
            tool_calls=(),
            first_byte_ms=None,
            response_sha256=None,
            latency_ms=1,
            started_at=1.0,
            finished_at=1e22,
            team=None,
        ),
        call(4, tenant=ODD, model_group=ODD, error_code=ODD, entitlement_id="ent_1", stream=True),
        msgspec.structs.replace(
            call(5, outcome="denied", tenant=ODD, status=429, error_code="rate_limit_exceeded"), team=None, key_id=None
        ),
    ],
)
def test_call_rows_are_the_canonical_bodies(rec):
    assert call_body(rec) == reference(rec)


def test_call_rows_cover_empty_attempts_tool_calls_and_estimated_usage():
    rec = msgspec.structs.replace(
        call(6),
        attempts=(),
        tool_calls=(("a", "c1"), ("b", "c2")),
        usage=Usage(prompt_tokens=1, completion_tokens=0, estimated=True, reasoning_tokens=5),
    )
    assert call_body(rec) == reference(rec)


def test_started_row_is_the_canonical_body():
    for principal in (
        Principal(tenant="ten_a", subject="key_abc", source="api_key", team="team_x", key_id="key_abc"),
        Principal(tenant=ODD, subject=ODD, source="oidc:corp"),
    ):
        body = CallStarted(
            request_id="req_1",
            tenant=principal.tenant,
            team=principal.team,
            key_id=principal.key_id,
            subject=principal.subject,
            principal_source=principal.source,
            endpoint="chat",
            model_group=ODD,
            request_sha256="a" * 64,
        )
        assert started_body("req_1", principal, ODD, "chat", "a" * 64) == canonical(body)


def test_a_written_chain_is_what_seal_writes_line_for_line(tmp_path):
    # The writer formats each line from a template; seal() is the reference encoding of an event.
    async def main():
        log = AuditLog(config(tmp_path))
        await log.start()
        p = Principal(tenant=ODD, subject="s", source="api_key")
        await log.call_started("req_1", p, "g", "chat", "c" * 64)
        log.record(call(1))
        log.record(call(2, outcome="denied", status=403))
        await log.append("agent_step", step(detail={"b": 1, "a": [1.5, None]}))
        await log.close()
        return log

    log = asyncio.run(main())
    with open(os.path.join(log.dir, log.chain + ".jsonl"), "rb") as f:
        stored = f.read().splitlines(keepends=True)
    assert len(stored) == 5
    for line in stored:
        event = msgspec.json.decode(line)
        core = EventCore(**{k: v for k, v in event.items() if k != "hash"})
        assert seal(core) == (line, event["hash"])
    assert verify_dir(str(tmp_path)).ok


def step(**detail) -> AgentStep:
    return AgentStep(tenant="t", subject="s", run_id="r", step=1, action="x", **detail)


def test_a_payload_that_cannot_be_encoded_fails_its_producer_only(tmp_path):
    async def main():
        log = AuditLog(config(tmp_path))
        await log.start()
        bad = log.append("agent_step", step(detail={"x": object()}))
        good = log.append("agent_step", step())
        log.record(msgspec.structs.replace(call(1), attempts=(object(),)))  # logged, never raised
        with pytest.raises(TypeError):
            await bad
        assert await good == 1
        await log.close()
        return log

    log = asyncio.run(main())
    assert log.queued == 0
