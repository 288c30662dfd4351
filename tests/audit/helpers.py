"""Shared helpers: real CallRecords, keys, and a writer over a temporary directory."""

from __future__ import annotations

import subprocess
import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from multihome.accounting.record import AttemptRecord, CallRecord, Usage
from multihome.audit.events import Attempt, CallEvent, PolicyDenial, Tokens, ToolCall
from multihome.audit.keys import private_pem, public_pem
from multihome.config.audit import AuditConfig


def call(
    i: int = 0,
    *,
    tenant: str = "ten_a",
    outcome: str = "ok",
    model_group: str = "gpt-4o",
    deployment: str | None = "az-main",
    status: int = 200,
    **extra,
) -> CallRecord:
    now = time.time()
    return CallRecord(
        request_id=f"req_{i:06d}",
        started_at=now - 0.05,
        finished_at=now,
        endpoint="chat",
        tenant=tenant,
        subject=f"key_{tenant}",
        principal_source="api_key",
        team="team_x",
        key_id=f"key_{tenant}",
        model_group=model_group,
        deployment=deployment,
        provider="azure",
        provider_kind="azure",
        region="eastus",
        data_zone="US",
        attempts=(AttemptRecord("az-main", "http_503", 2.5, "capacity"), AttemptRecord("oa-main", "ok", 9.75)),
        status=status,
        outcome=outcome,
        usage=Usage(prompt_tokens=12, completion_tokens=7, cached_tokens=3),
        latency_ms=12.5,
        first_byte_ms=4.0,
        tool_calls=(("get_weather", "call_1"),),
        request_sha256="a" * 64,
        response_sha256="b" * 64,
        **extra,
    )


def key_files(tmp, name: str = "signing") -> tuple[Ed25519PrivateKey, str, str]:
    key = Ed25519PrivateKey.generate()
    priv, pub = tmp / f"{name}.pem", tmp / f"{name}.pub.pem"
    priv.write_bytes(private_pem(key))
    pub.write_bytes(public_pem(key))
    return key, str(priv), str(pub)


def config(directory, key_file: str | None = None, **extra) -> AuditConfig:
    return AuditConfig(dir=str(directory), signing_key_file=key_file, **extra)


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real command, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "multihome.cli", "audit", *args], capture_output=True, text=True, timeout=60
    )


def documented(rec: CallRecord) -> CallEvent | PolicyDenial:
    """The event body of a finished call as docs/audit.md and events.py document it, field by field."""
    if rec.outcome == "denied":
        who = dict(
            tenant=rec.tenant,
            team=rec.team,
            key_id=rec.key_id,
            subject=rec.subject,
            principal_source=rec.principal_source,
        )
        body = PolicyDenial(
            request_id=rec.request_id,
            time=rec.finished_at,
            endpoint=rec.endpoint,
            model_group=rec.model_group,
            status=rec.status,
            policy_code=rec.policy_code,
            error_code=rec.error_code,
            entitlement_id=rec.entitlement_id,
            request_sha256=rec.request_sha256,
            **who,
        )
        return body
    u = rec.usage
    return CallEvent(
        request_id=rec.request_id,
        started_at=rec.started_at,
        finished_at=rec.finished_at,
        tenant=rec.tenant,
        team=rec.team,
        key_id=rec.key_id,
        subject=rec.subject,
        principal_source=rec.principal_source,
        endpoint=rec.endpoint,
        model_group=rec.model_group,
        deployment=rec.deployment,
        provider=rec.provider,
        provider_kind=rec.provider_kind,
        region=rec.region,
        data_zone=rec.data_zone,
        stream=rec.stream,
        attempts=tuple(
            Attempt(deployment=a.deployment, outcome=a.outcome, ms=a.ms, reason=a.reason) for a in rec.attempts
        ),
        status=rec.status,
        outcome=rec.outcome,
        error_code=rec.error_code,
        policy_code=rec.policy_code,
        entitlement_id=rec.entitlement_id,
        tool_calls=tuple(ToolCall(name=n, id=i) for n, i in rec.tool_calls),
        tokens=None
        if u is None
        else Tokens(
            prompt=u.prompt_tokens, completion=u.completion_tokens, cached=u.cached_tokens, estimated=u.estimated
        ),
        latency_ms=rec.latency_ms,
        first_byte_ms=rec.first_byte_ms,
        request_sha256=rec.request_sha256,
        response_sha256=rec.response_sha256,
    )
