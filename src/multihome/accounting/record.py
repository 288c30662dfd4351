"""The record of one call, built by the front door once the answer is complete (or abandoned).

Every consumer (metering, budgets, contracts, audit) reads this one struct; none of them reaches
back into HTTP or routing. (When every sink takes the call's facts instead, `record_call`, none is
made: accounting/tracker.py CallFacts; those sinks write what this record would have told them.) It never holds a secret or message content: only hashes of content.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False  # True when the provider reported no usage and the gateway estimated it
    # The part of completion_tokens the model spent reasoning, where the upstream reports it apart
    # (OpenAI reasoning_tokens, Gemini thoughtsTokenCount); 0 where it does not (Claude). Already inside
    # completion_tokens, so it is priced as output once, never added again (docs/metering.md).
    reasoning_tokens: int = 0


class AttemptRecord(msgspec.Struct, frozen=True):
    deployment: str
    outcome: str  # "ok", "http_503", "timeout", "skipped", "fallback_group", ...
    ms: float
    reason: str | None = None


class CallRecord(msgspec.Struct, frozen=True):
    """Every field has a default so that the tracker can make one positionally, in this order (a
    keyword call of 30 arguments costs msgspec ~7x the instructions); give the first ten (those
    without a natural default) when making one by keyword."""

    request_id: str = ""
    started_at: float = 0.0  # unix seconds
    finished_at: float = 0.0
    endpoint: str = ""  # "chat" | "embeddings" | "messages" | "responses" | "memory_embeddings"
    # who (never the key or token: key_id is the visible id)
    tenant: str = ""
    subject: str = ""
    principal_source: str = ""
    team: str | None = None
    key_id: str | None = None
    # what
    model_group: str = ""
    deployment: str | None = None  # the one that served (None if none did)
    provider: str | None = None
    provider_kind: str | None = None
    region: str | None = None
    data_zone: str | None = None
    stream: bool = False
    attempts: tuple[AttemptRecord, ...] = ()
    status: int = 0  # HTTP status the client got
    # ok | client_error | declined (no deployment served) | denied (policy/limits) | cancelled (client left)
    # | stream_error (broke after the first byte) | gateway_error (an upstream answered, the gateway failed to deliver it)
    # | unserved (an upstream answer of the call, billed and not served: request_id `<call's>.<n>`; tracker._unserved)
    outcome: str = ""
    error_code: str | None = None
    usage: Usage | None = None
    latency_ms: float = 0.0
    first_byte_ms: float | None = None
    policy_code: str | None = None
    entitlement_id: str | None = None
    tool_calls: tuple[tuple[str, str], ...] = ()  # (function name, call id) the model asked for
    request_sha256: str = ""
    response_sha256: str | None = None
    # The client's W3C trace context headers, kept only when a sink asks for them (telemetry).
    traceparent: str | None = None
    tracestate: str | None = None
    # The `service_tier` the call asked for (chat), when it asked: metering prices it at that tier's
    # price where the deployment declares one (metering/prices.py `for_tier`).
    service_tier: str | None = None


class CallSink(Protocol):
    """Consumes finished calls. `record` is called on the event loop and must not block: enqueue.
    A sink that never reads `request_sha256` / `response_sha256` may say so with a `hashes = False`
    attribute: when no sink (nor the audit trail, nor content capture) reads them, neither the request
    nor the answer is hashed, and both are empty in the record."""

    def record(self, call: CallRecord) -> None: ...
