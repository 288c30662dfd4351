"""Shared helpers: real CallRecords, keys, and a writer over a temporary directory."""

from __future__ import annotations

import subprocess
import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from multihome.accounting.record import AttemptRecord, CallRecord, Usage
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
