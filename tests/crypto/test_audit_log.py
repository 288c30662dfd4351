"""KMS events through the real hash-chained audit log: every key use that reached the KMS, the
rotation and the shred are there, verifiable, and the files hold no key bytes."""

from __future__ import annotations

import pytest

from multihome.audit import AuditLog, AuditReader, Filters
from multihome.config.audit import AuditConfig
from multihome.crypto import open_keyring, rewrap, rotate, shred

from .harness import Recording, secret_forms

pytestmark = pytest.mark.anyio


async def test_kms_events_in_the_audit_trail(local_kms, engine, tmp_path):
    log = AuditLog(AuditConfig(dir=str(tmp_path / "audit"), fsync=False))
    await log.start()
    backends = []

    def build(target, where):
        backends.append(Recording(local_kms.build(target, where)))
        return backends[-1]

    ring = open_keyring(local_kms.config(), engine, audit=lambda e: log.append("kms", e), build=build)
    sealed = await ring.seal("ten_a", "credentials", "provider_credentials", "p1", b"sk-live-SECRET")
    ring.forget()
    await ring.open("ten_a", "credentials", "provider_credentials", "p1", sealed)
    await rotate(ring, "ten_a")
    await rewrap(ring)
    await shred(ring, "ten_a")
    await ring.close()
    await log.close()

    events = [e for _, e in AuditReader(str(tmp_path / "audit")).iter_events(Filters(kind="kms"))]
    ops = [e["body"]["op"] for e in events]
    assert ops == ["generate", "unwrap", "rotate", "rewrap", "destroy_key", "shred"]
    assert {e["body"]["tenant"] for e in events} == {"ten_a"}
    assert all(e["body"]["outcome"] == "ok" for e in events)
    text = b"".join(p.read_bytes() for p in (tmp_path / "audit").rglob("*") if p.is_file())
    assert b"sk-live-SECRET" not in text
    for form in secret_forms([p for b in backends for p in b.plaintexts]):
        assert form.encode() not in text
