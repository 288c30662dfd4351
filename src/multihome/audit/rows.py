"""The per-call events' bodies (`call_started`, `call`, `policy_denial`) as canonical bytes, one encode each.

The canonical form (events.py) sorts keys. msgspec's sorted encoder builds and sorts a key list for
every object of every encode; these rows declare their fields already in sorted order and hold no
dict, so the plain encoder writes the very same bytes without sorting. They are built positionally
(a keyword call costs msgspec a name match per field), most fields picked from the CallRecord's
`astuple` by one `itemgetter` (a getattr per field costs ~3x as much). tests/audit/test_rows.py holds each row to the sorted encoding of the body struct
that documents it (events.py `CallStarted`, `CallEvent`, `PolicyDenial`).
"""

from __future__ import annotations

from operator import itemgetter
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


class _AttemptRow(msgspec.Struct, gc=False):
    deployment: str
    ms: float
    outcome: str
    reason: str | None


class _TokensRow(msgspec.Struct, gc=False):
    cached: int
    completion: int
    estimated: bool
    prompt: int


class _ToolCallRow(msgspec.Struct, gc=False):
    id: str
    name: str


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


def _picker(*names: str) -> itemgetter:
    """The CallRecord fields `names`, in that order, out of its `astuple` (positions found by name)."""
    return itemgetter(*(CallRecord.__struct_fields__.index(name) for name in names))


# The CallRecord fields a row copies as they are, in the row's order (a denial's `time` is `finished_at`).
_call_fields = _picker(*_CallRow.__struct_fields__[1:-2])
_denial_fields = _picker(*_DenialRow.__struct_fields__[:-1], "finished_at")
_astuple = msgspec.structs.astuple


def started_body(request_id: str, principal: Any, model_group: str, endpoint: str, request_sha256: str) -> bytes:
    """`call_started`'s body."""
    p = principal
    return _encode(
        _StartedRow(endpoint, p.key_id, model_group, p.source, request_id, request_sha256, p.subject, p.team, p.tenant)
    )


def call_body(call: CallRecord) -> tuple[bytes, bytes]:
    """A finished call -> (its kind, its body): `policy_denial` for a denied call, else `call`."""
    if call.outcome == "denied":
        return b"policy_denial", _encode(_DenialRow(*_denial_fields(_astuple(call))))
    usage, tools = call.usage, call.tool_calls
    return b"call", _encode(
        _CallRow(  # type: ignore[call-arg]  # mypy cannot count the fields _call_fields returns
            tuple([_AttemptRow(a.deployment, a.ms, a.outcome, a.reason) for a in call.attempts]),
            *_call_fields(_astuple(call)),
            None
            if usage is None
            else _TokensRow(usage.cached_tokens, usage.completion_tokens, usage.estimated, usage.prompt_tokens),
            tuple([_ToolCallRow(i, n) for n, i in tools]) if tools else (),
        )
    )
