"""The same assertions against every KMS backend: round trip, tampering, moved records, key versions,
rotate + rewrap, shred, audit events, and no key bytes in errors or logs."""

from __future__ import annotations

import asyncio
import base64
import logging

import msgspec
import pytest

from multihome.crypto import (
    CiphertextMismatch,
    DataKeyNotFound,
    MalformedCiphertext,
    WrongBinding,
    open_keyring,
    rewrap,
    rotate,
    shred,
)
from multihome.crypto.envelope import encode_header, parse_header

from .harness import Recording, secret_forms

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ring(kms, engine):
    events = []
    backends = []

    def build(target, where):
        backends.append(Recording(kms.build(target, where)))
        return backends[-1]

    keyring = open_keyring(kms.config(), engine, audit=events.append, build=build)
    keyring.events = events
    keyring.backends = backends
    yield keyring
    await keyring.close()


async def test_round_trip_and_binding(ring):
    sealed = await ring.seal("t1", "responses", "responses", "resp_1", b"hello MARKER-1")
    assert b"MARKER-1" not in sealed
    assert await ring.open("t1", "responses", "responses", "resp_1", sealed) == b"hello MARKER-1"
    with pytest.raises(CiphertextMismatch, match="modified, or sealed for another record"):
        await ring.open("t1", "responses", "responses", "resp_2", sealed)
    with pytest.raises(CiphertextMismatch):
        await ring.open("t1", "responses", "conversations", "resp_1", sealed)
    with pytest.raises(WrongBinding, match="another tenant"):
        await ring.open("t2", "responses", "responses", "resp_1", sealed)
    with pytest.raises(WrongBinding, match="purpose 'responses', not 'memory'"):
        await ring.open("t1", "memory", "responses", "resp_1", sealed)


async def test_tampered_ciphertext_fails(ring):
    sealed = await ring.seal("t1", "memory", "memory", "m1", b"x" * 100)
    end = parse_header(sealed).end
    for i in (end + 3, end + 20, len(sealed) - 1):  # nonce, body, tag
        bad = bytearray(sealed)
        bad[i] ^= 1
        with pytest.raises(CiphertextMismatch):
            await ring.open("t1", "memory", "memory", "m1", bytes(bad))
    with pytest.raises(MalformedCiphertext):
        await ring.open("t1", "memory", "memory", "m1", b"MHE\x09" + sealed[4:])
    with pytest.raises(MalformedCiphertext):
        await ring.open("t1", "memory", "memory", "m1", sealed[:20])


async def test_wrong_key_version_in_header_fails(ring):
    sealed = await ring.seal("t1", "runs", "runs", "r1", b"payload")
    h = parse_header(sealed)
    forged = encode_header(h.backend, h.kek_id, h.kek_version + "9", h.data_key_id) + sealed[h.end :]
    with pytest.raises(CiphertextMismatch):
        await ring.open("t1", "runs", "runs", "r1", forged)
    unknown = encode_header(h.backend, h.kek_id, h.kek_version, "dk_" + "0" * 20) + sealed[h.end :]
    with pytest.raises(DataKeyNotFound):
        await ring.open("t1", "runs", "runs", "r1", unknown)


async def test_rotate_and_rewrap_keep_every_record_readable(ring):
    records = {}
    for tenant in ("t1", "t2"):
        for purpose in ("responses", "credentials"):
            for i in range(3):
                records[(tenant, purpose, f"r{i}")] = await ring.seal(
                    tenant, purpose, "tbl", f"r{i}", f"{tenant}/{purpose}/{i}".encode()
                )
    before = {r.id: r for r in await ring.repo.page("", 100)}
    rotations = await rotate(ring)
    assert rotations
    # new writes use new data keys
    new = await ring.seal("t1", "responses", "tbl", "after", b"after rotation")
    assert parse_header(new).data_key_id not in before
    seen = []
    report = await rewrap(ring, batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert report.total == len(before) + 1 and report.rewrapped == report.total and not report.failed
    assert seen[-1] == (report.total, report.total) and len(seen) == (report.total + 1) // 2
    after = {r.id: r for r in await ring.repo.page("", 100)}
    assert all(after[i].wrapped != before[i].wrapped for i in before)
    ring.forget()  # a fresh replica: every key is unwrapped from its re-wrapped form
    for (tenant, purpose, rid), sealed in records.items():
        assert await ring.open(tenant, purpose, "tbl", rid, sealed) == f"{tenant}/{purpose}/{rid[1:]}".encode()
    assert await ring.open("t1", "responses", "tbl", "after", new) == b"after rotation"
    ops = {e.op for e in ring.events}
    assert {"generate", "unwrap", "rotate", "rewrap"} <= ops


async def test_seals_and_opens_go_on_during_rewrap(ring):
    sealed = [await ring.seal(f"t{i % 3}", "runs", "runs", str(i), str(i).encode()) for i in range(30)]
    await rotate(ring)

    async def traffic():
        for n in range(60):
            i = n % 30
            assert await ring.open(f"t{i % 3}", "runs", "runs", str(i), sealed[i]) == str(i).encode()
            s = await ring.seal(f"t{i % 3}", "runs", "runs", f"new{n}", b"new")
            assert await ring.open(f"t{i % 3}", "runs", "runs", f"new{n}", s) == b"new"
            if n % 10 == 0:
                ring.forget()  # force unwraps while rows are being re-wrapped
            await asyncio.sleep(0)

    report, _ = await asyncio.gather(rewrap(ring, batch_size=1), traffic())
    assert not report.failed and report.rewrapped + report.skipped >= report.total  # keys made meanwhile count too


async def test_shred_makes_exactly_that_tenant_unreadable(ring):
    a = await ring.seal("victim", "capture", "capture", "c1", b"victim data")
    b = await ring.seal("other", "capture", "capture", "c1", b"other data")
    report = await shred(ring, "victim")
    assert report.data_keys_deleted == 1 and report.kek_destroyed
    ring.forget()
    with pytest.raises(DataKeyNotFound, match="shredded"):
        await ring.open("victim", "capture", "capture", "c1", a)
    assert await ring.open("other", "capture", "capture", "c1", b) == b"other data"
    assert [e for e in ring.events if e.op == "shred"][0].tenant == "victim"
    # the tenant may store again, under new key material
    again = await ring.seal("victim", "capture", "capture", "c2", b"fresh")
    assert await ring.open("victim", "capture", "capture", "c2", again) == b"fresh"


async def test_no_key_bytes_in_errors_logs_or_audit(ring, kms, caplog):
    caplog.set_level(logging.DEBUG)
    errors = []
    sealed = await ring.seal("t1", "credentials", "provider_credentials", "p1", b"sk-SECRET-MARKER")
    for args in (("t2", "credentials"), ("t1", "memory"), ("t1", "credentials")):
        try:
            await ring.open(*args, "provider_credentials", "other", sealed)
        except Exception as exc:
            errors.append(f"{exc!r} {exc}")
    assert len(errors) == 3
    key = ring._keys[parse_header(sealed).data_key_id]
    row = await ring.repo.get(key.id)
    plaintexts = [p for b in ring.backends for p in b.plaintexts]
    assert plaintexts
    forms = [row.wrapped.hex(), base64.b64encode(row.wrapped).decode(), "sk-SECRET-MARKER", *secret_forms(plaintexts)]
    if kms.name == "local":  # the KEKs themselves are in our key file: none of them may leak either
        keks = msgspec.json.decode(kms.key_file.read_bytes())["keys"]
        forms += secret_forms([base64.b64decode(v) for k in keks.values() for v in k["versions"].values()])
    text = "\n".join([*errors, caplog.text, *(repr(e) for e in ring.events), repr(key)])
    for form in forms:
        assert form not in text
