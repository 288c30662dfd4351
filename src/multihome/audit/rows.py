"""The per-call events' bodies (`call_started`, `call`, `policy_denial`) as canonical bytes, one encode each.

The canonical form (events.py) sorts keys. msgspec's sorted encoder builds and sorts a key list for
every object of every encode; these rows declare their fields already in sorted order and hold no
dict, so the plain encoder writes the very same bytes without sorting. They are built positionally
(a keyword call costs msgspec a name match per field) from plain attribute reads (under callgrind an
`attrgetter`, or `astuple` + `itemgetter`, over the CallRecord cost 5-7k instructions more a call).
tests/audit/test_rows.py holds each row to the sorted encoding of the body struct that documents it
(events.py `CallStarted`, `CallEvent`, `PolicyDenial`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ..accounting.record import CallRecord

_encode = msgspec.json.Encoder().encode  # declaration order: the rows' fields are declared sorted


class StartedRow(msgspec.Struct, gc=False):
    endpoint: str
    key_id: str | None
    model_group: str
    principal_source: str
    request_id: str
    request_sha256: str
    subject: str
    team: str | None
    tenant: str


class TokensRow(msgspec.Struct, gc=False):
    cached: int
    completion: int
    estimated: bool
    prompt: int


class ToolCallRow(msgspec.Struct, gc=False):
    id: str
    name: str


class AttemptRow(msgspec.Struct, gc=False):
    deployment: str
    ms: float
    outcome: str
    reason: str | None


class CallRow(msgspec.Struct, gc=False):
    attempts: Sequence[AttemptRow]  # a tuple or a list: the same JSON
    data_zone: str | None
    deployment: str | None
    endpoint: str
    entitlement_id: str | None
    error_code: str | None
    finished_at: float
    first_byte_ms: float | None
    key_id: str | None
    latency_ms: float
    model_group: str
    outcome: str
    policy_code: str | None
    principal_source: str
    provider: str | None
    provider_kind: str | None
    region: str | None
    request_id: str
    request_sha256: str
    response_sha256: str | None
    started_at: float
    status: int
    stream: bool
    subject: str
    team: str | None
    tenant: str
    tokens: TokensRow | None
    tool_calls: Sequence[ToolCallRow]


class DenialRow(msgspec.Struct, gc=False):
    endpoint: str
    entitlement_id: str | None
    error_code: str | None
    key_id: str | None
    model_group: str
    policy_code: str | None
    principal_source: str
    request_id: str
    request_sha256: str
    status: int
    subject: str
    team: str | None
    tenant: str
    time: float


def started_body(request_id: str, principal: Any, model_group: str, endpoint: str, request_sha256: str) -> bytes:
    """`call_started`'s body (AuditLog.call_started builds the same row in its own frame)."""
    p = principal
    return _encode(
        StartedRow(endpoint, p.key_id, model_group, p.source, request_id, request_sha256, p.subject, p.team, p.tenant)
    )


def call_body(call: CallRecord) -> tuple[bytes, bytes]:
    """A finished call -> (its kind, its body): `policy_denial` for a denied call, else `call`."""
    kind, row = call_row(call)
    return kind, _encode(row)


def call_row(call: CallRecord) -> tuple[bytes, msgspec.Struct]:
    """`call_body`'s kind and row, for a writer that encodes it into a buffer of its own (AuditLog)."""
    c = call
    if c.outcome == "denied":
        return b"policy_denial", (
            DenialRow(
                c.endpoint,
                c.entitlement_id,
                c.error_code,
                c.key_id,
                c.model_group,
                c.policy_code,
                c.principal_source,
                c.request_id,
                c.request_sha256,
                c.status,
                c.subject,
                c.team,
                c.tenant,
                c.finished_at,
            )
        )
    u = c.usage
    return b"call", (
        CallRow(
            # AttemptRecord holds the body's attempt fields, not in sorted order: as rows that do (a
            # sorted encode of its own cost more).
            _attempt_rows(c.attempts),
            c.data_zone,
            c.deployment,
            c.endpoint,
            c.entitlement_id,
            c.error_code,
            c.finished_at,
            c.first_byte_ms,
            c.key_id,
            c.latency_ms,
            c.model_group,
            c.outcome,
            c.policy_code,
            c.principal_source,
            c.provider,
            c.provider_kind,
            c.region,
            c.request_id,
            c.request_sha256,
            c.response_sha256,
            c.started_at,
            c.status,
            c.stream,
            c.subject,
            c.team,
            c.tenant,
            None if u is None else TokensRow(u.cached_tokens, u.completion_tokens, u.estimated, u.prompt_tokens),
            tuple([ToolCallRow(i, n) for n, i in c.tool_calls]) if c.tool_calls else (),
        )
    )


def _attempt_rows(attempts: tuple) -> tuple[AttemptRow, ...]:
    """The call's attempts as the body's rows; one attempt, the usual case, without a comprehension."""
    if len(attempts) == 1:
        a = attempts[0]
        return (AttemptRow(a.deployment, a.ms, a.outcome, a.reason),)
    return tuple([AttemptRow(a.deployment, a.ms, a.outcome, a.reason) for a in attempts])


def denial_row_of(t: Any, finished_at: float, status: int, error_code: str | None) -> DenialRow:
    """The `policy_denial` row of `call_row` of the record the tracker `t` would make of a denied call's
    facts (accounting.CallFacts), without making it; AuditLog.record_call builds a `call` row itself."""
    who = t.principal
    return DenialRow(
        t.endpoint,
        t.entitlement_id,
        error_code,
        who.key_id,
        t.model_group,
        t.policy_code,
        who.source,
        t.request_id,
        t.request_sha256,
        status,
        who.subject,
        who.team,
        who.tenant,
        finished_at,
    )
