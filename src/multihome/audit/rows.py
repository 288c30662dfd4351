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

from typing import Any

import msgspec

from ..accounting.record import CallRecord

_encode = msgspec.json.Encoder().encode  # declaration order: the rows' fields are declared sorted


class _StartedRow(msgspec.Struct, gc=False):
    endpoint: str
    key_id: str | None
    model_group: str
    principal_source: str
    request_id: str
    request_sha256: str
    subject: str
    team: str | None
    tenant: str


class _TokensRow(msgspec.Struct, gc=False):
    cached: int
    completion: int
    estimated: bool
    prompt: int


class _ToolCallRow(msgspec.Struct, gc=False):
    id: str
    name: str


class _AttemptRow(msgspec.Struct, gc=False):
    deployment: str
    ms: float
    outcome: str
    reason: str | None


class _CallRow(msgspec.Struct, gc=False):
    attempts: tuple[_AttemptRow, ...]
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
    tokens: _TokensRow | None
    tool_calls: tuple[_ToolCallRow, ...]


class _DenialRow(msgspec.Struct, gc=False):
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
    """`call_started`'s body."""
    return _encode(started_row(request_id, principal, model_group, endpoint, request_sha256))


def started_row(request_id: str, principal: Any, model_group: str, endpoint: str, request_sha256: str) -> _StartedRow:
    """`started_body`'s row, for a writer that encodes it into a buffer of its own (AuditLog)."""
    p = principal
    return _StartedRow(
        endpoint, p.key_id, model_group, p.source, request_id, request_sha256, p.subject, p.team, p.tenant
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
            _DenialRow(
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
        _CallRow(
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
            None if u is None else _TokensRow(u.cached_tokens, u.completion_tokens, u.estimated, u.prompt_tokens),
            tuple([_ToolCallRow(i, n) for n, i in c.tool_calls]) if c.tool_calls else (),
        )
    )


def _attempt_rows(attempts: tuple) -> tuple[_AttemptRow, ...]:
    """The call's attempts as the body's rows; one attempt, the usual case, without a comprehension."""
    if len(attempts) == 1:
        a = attempts[0]
        return (_AttemptRow(a.deployment, a.ms, a.outcome, a.reason),)
    return tuple([_AttemptRow(a.deployment, a.ms, a.outcome, a.reason) for a in attempts])


def call_row_of(
    t: Any,
    finished_at: float,
    dep: Any,
    stream: bool,
    attempts: Any,
    status: int,
    outcome: str,
    error_code: str | None,
    u: Any,
    latency_ms: float,
    first_byte_ms: float | None,
    tool_calls: Any,
    response_sha256: str | None,
) -> tuple[bytes, msgspec.Struct]:
    """`call_row` of the record the tracker `t` would make of these facts (accounting.CallFacts), without
    making it: the same kind and row, so the same bytes (tests/accounting/test_record_call.py)."""
    who = t.principal
    if outcome == "denied":
        return b"policy_denial", (
            _DenialRow(
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
        )
    if dep is not None:
        name, provider, kind, region, zone = dep.name, dep.provider, dep.adapter.kind, dep.region, dep.data_zone
    else:
        name = provider = kind = region = zone = None
    if len(attempts) == 1:  # routing's attempts, their ms rounded as the record's (accounting/tracker.py _attempts)
        a = attempts[0]
        rows: tuple[_AttemptRow, ...] = (
            _AttemptRow(a.deployment, (a.ms * 1000 + 0.5) // 1 / 1000, a.outcome, a.reason),
        )
    else:
        rows = tuple(
            [_AttemptRow(a.deployment, (a.ms * 1000 + 0.5) // 1 / 1000, a.outcome, a.reason) for a in attempts]
        )
    return b"call", (
        _CallRow(
            rows,
            zone,
            name,
            t.endpoint,
            t.entitlement_id,
            error_code,
            finished_at,
            first_byte_ms,
            who.key_id,
            latency_ms,
            t.model_group,
            outcome,
            t.policy_code,
            who.source,
            provider,
            kind,
            region,
            t.request_id,
            t.request_sha256,
            response_sha256,
            t.started_at,
            status,
            stream,
            who.subject,
            who.team,
            who.tenant,
            None if u is None else _TokensRow(u.cached_tokens, u.completion_tokens, u.estimated, u.prompt_tokens),
            tuple([_ToolCallRow(i, n) for n, i in tool_calls]) if tool_calls else (),
        )
    )
