"""docs/encryption.md "Envelope format (version 1)", read byte by byte as the page lays it out, and
opened with nothing but the data key and AES-GCM: what a tool outside Multihome (a recovery script,
an auditor's) can rely on."""

from __future__ import annotations

import struct

import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from multihome.crypto import open_keyring
from multihome.storage.tables import data_keys

from .harness import Recording

pytestmark = pytest.mark.anyio


def _field(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">I", len(raw)) + raw


async def test_a_sealed_record_is_laid_out_and_bound_as_the_page_says(local_kms, engine):
    backends: list[Recording] = []

    def build(target, where):
        backends.append(Recording(local_kms.build(target, where)))
        return backends[-1]

    ring = open_keyring(local_kms.config(), engine, build=build)
    try:
        sealed = await ring.seal("ten_ü", "memory", "memory_records", "mem_42", b"the record")
    finally:
        await ring.close()
    (data_key,) = backends[0].plaintexts

    assert sealed[:3] == b"MHE" and sealed[3] == 0x01 and sealed[4] == 1  # magic, version 1, backend local
    at = 5
    (n1,) = struct.unpack(">H", sealed[at : at + 2])
    kek_id = sealed[at + 2 : at + 2 + n1].decode()
    at += 2 + n1
    kek_version = sealed[at + 1 : at + 1 + sealed[at]].decode()
    at += 1 + sealed[at]
    data_key_id = sealed[at + 1 : at + 1 + sealed[at]].decode("ascii")
    at += 1 + sealed[at]
    nonce, ciphertext = sealed[at : at + 12], sealed[at + 12 :]
    assert kek_id.startswith("multihome-") and kek_version == "1" and data_key_id.startswith("dk_")
    assert len(ciphertext) == len(b"the record") + 16  # the tag appended: header + 28 bytes of overhead
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(data_keys).where(data_keys.c.id == data_key_id))).one()
    assert (row.tenant_id, row.purpose, row.kek_id, row.kek_version) == ("ten_ü", "memory", kek_id, "1")

    aad = b"multihome.seal.v1" + b"".join(map(_field, ("ten_ü", "memory", "memory_records", "mem_42")))
    assert AESGCM(data_key).decrypt(nonce, ciphertext, aad + sealed[:at]) == b"the record"
    with pytest.raises(InvalidTag):  # another record id: the binding fails
        AESGCM(data_key).decrypt(nonce, ciphertext, aad.replace(b"mem_42", b"mem_43") + sealed[:at])
