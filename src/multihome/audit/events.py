"""Audit event schema and its canonical encoding.

Canonical form of an event = the UTF-8 JSON that `msgspec.json.Encoder(order="sorted")` writes for
the envelope *without* its `hash` key: keys sorted at every level, no whitespace, integers as
integers, floats in shortest round-trip form (`0.5`, `1.0`), strings with minimal escapes, absent
values as `null` (every field is always present). `hash` = SHA-256 hex of those bytes. A stored
line is the canonical form with `,"hash":"<hex>"` spliced in before the final `}`, so a verifier
re-encodes the decoded line, recomputes the hash, and also checks the line is byte-for-byte that
form (a line that says the same thing in other bytes was still edited).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

KINDS = ("call", "call_started", "policy_denial", "admin_change", "agent_step", "kms", "memory")
FORMAT = "multihome.audit.v1"
GENESIS_KIND = "chain_opened"  # seq 0 of every chain, written by the writer itself (never by a producer)

_encoder = msgspec.json.Encoder(order="sorted")
canonical = _encoder.encode


def genesis(chain: str) -> str:
    """The `prev` of a chain's genesis record (seq 0): bound to the chain id, so events cannot move between
    chains. (In a chain written before genesis records existed, the `prev` of seq 1.)"""
    return hashlib.sha256(f"{FORMAT} genesis {chain}".encode()).hexdigest()


class _Body(msgspec.Struct, frozen=True, kw_only=True):
    pass


class Attempt(_Body, frozen=True):
    deployment: str
    outcome: str
    ms: float
    reason: str | None = None


class ToolCall(_Body, frozen=True):
    name: str
    id: str


class Tokens(_Body, frozen=True):
    prompt: int
    completion: int
    cached: int
    estimated: bool


class CallStarted(_Body, frozen=True):
    """Written before the upstream call and durable before the answer's first byte leaves."""

    request_id: str
    tenant: str
    team: str | None
    key_id: str | None
    subject: str
    principal_source: str
    endpoint: str
    model_group: str
    request_sha256: str


class CallEvent(_Body, frozen=True):
    request_id: str
    started_at: float
    finished_at: float
    tenant: str
    team: str | None
    key_id: str | None
    subject: str
    principal_source: str
    endpoint: str
    model_group: str
    deployment: str | None
    provider: str | None
    provider_kind: str | None
    region: str | None
    data_zone: str | None
    stream: bool
    attempts: tuple[Attempt, ...]
    status: int
    outcome: str
    error_code: str | None
    policy_code: str | None
    entitlement_id: str | None
    tool_calls: tuple[ToolCall, ...]
    tokens: Tokens | None
    latency_ms: float
    first_byte_ms: float | None
    request_sha256: str
    response_sha256: str | None


class PolicyDenial(_Body, frozen=True):
    request_id: str
    time: float
    tenant: str
    team: str | None
    key_id: str | None
    subject: str
    principal_source: str
    endpoint: str
    model_group: str
    status: int
    policy_code: str | None
    error_code: str | None
    entitlement_id: str | None
    request_sha256: str


class AdminChange(_Body, frozen=True):
    actor: str
    tenant: str | None
    action: str  # e.g. "key.revoke"
    object_type: str
    object_id: str | None
    detail: dict[str, Any] = {}


class AgentStep(_Body, frozen=True):
    """Reserved for the stateful runtime: one step of a multi-step agent run."""

    tenant: str
    subject: str
    run_id: str
    step: int
    action: str  # "model_call" | "tool_call" | "tool_result" | ...
    detail: dict[str, Any] = {}


class MemoryDeletion(_Body, frozen=True):
    """A bulk delete of agent memory (state/memory/, docs/memory.md): a user forgotten or a namespace
    deleted. Ids and counts only, never a record's content."""

    op: str  # "forget_user" | "delete_namespace"
    tenant: str
    agent_id: str | None  # None for forget_user: every agent's namespace of the user
    user_id: str
    namespaces: int
    records: int
    key_id: str | None
    subject: str


class KmsEvent(_Body, frozen=True):
    """A key use that reached a KMS (generate, unwrap, rewrap), a rotation or a shred
    (docs/encryption.md "Audit"). Ids and versions only: never key bytes, wrapped or not."""

    op: str  # "generate" | "unwrap" | "rewrap" | "rotate" | "shred" | "destroy_key"
    kms: str  # the KMS's label: backend and where it is
    tenant: str | None
    purpose: str | None
    kek_id: str | None
    kek_version: str | None
    data_key_id: str | None
    outcome: str  # "ok" | "unavailable" | "refused"
    error: str | None = None
    detail: dict[str, Any] = {}


class Link(_Body, frozen=True):
    """An earlier chain as a new chain saw it when it opened: it had reached `seq`, whose hash was `head`
    (durable: fsynced before it was read), and `final` says a final checkpoint closed it there."""

    chain: str
    seq: int
    head: str
    final: bool


class ChainOpened(_Body, frozen=True):
    """The genesis record (seq 0): where the chain belongs, whether it is signed, and what came before it."""

    trail: str  # the trail the head registry files this chain under (audit.trail, default "<host>:<dir>")
    host: str
    pid: int
    key_id: str | None  # the checkpoint signing key; null: this chain has no checkpoint file
    links: tuple[Link, ...] = ()


BODY_TYPES: dict[str, type] = {
    "call": CallEvent,
    "call_started": CallStarted,
    "policy_denial": PolicyDenial,
    "admin_change": AdminChange,
    "agent_step": AgentStep,
    "kms": KmsEvent,
    GENESIS_KIND: ChainOpened,
}


class EventCore(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the hash covers."""

    chain: str
    seq: int
    time: float
    prev: str
    kind: str
    body: Any


def seal(core: EventCore) -> tuple[bytes, str]:
    """-> (the stored line with its newline, the event hash)."""
    data = canonical(core)
    digest = hashlib.sha256(data).hexdigest()
    return b"".join((data[:-1], b',"hash":"', digest.encode(), b'"}\n')), digest


def check_line(line: bytes) -> tuple[dict, str, str | None]:
    """Decode one stored line -> (event dict, recomputed hash, problem or None).

    Raises msgspec.DecodeError when the line is not JSON at all."""
    try:
        event = msgspec.json.decode(line)
    except UnicodeDecodeError as exc:  # invalid UTF-8 inside a string
        raise msgspec.DecodeError(str(exc)) from None
    if not isinstance(event, dict):
        raise msgspec.DecodeError("not a JSON object")
    stored = event.get("hash")
    core = {k: v for k, v in event.items() if k != "hash"}
    data = canonical(core)
    digest = hashlib.sha256(data).hexdigest()
    if stored != digest:
        return event, digest, "hash mismatch: the event's content does not match its hash (modified)"
    expected = b"".join((data[:-1], b',"hash":"', digest.encode(), b'"}'))
    if line.rstrip(b"\n") != expected:
        return event, digest, "not in canonical form: the line was re-encoded or edited"
    for key in ("chain", "seq", "time", "prev", "kind", "body"):
        if key not in event:
            return event, digest, f"missing field {key!r}"
    return event, digest, None
