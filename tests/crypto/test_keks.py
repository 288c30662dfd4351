"""Which KEK a tenant's data keys go under: per-tenant keys, a shared key, a tenant's own key."""

from __future__ import annotations

import pytest

from multihome.crypto import open_keyring, rotate, shred
from multihome.crypto.envelope import parse_header
from multihome.crypto.keks import tenant_key_name

pytestmark = pytest.mark.anyio


def test_tenant_key_names_are_safe_and_distinct():
    assert tenant_key_name("multihome-", "default") == "multihome-default"
    a, b = tenant_key_name("p-", "ten_a"), tenant_key_name("p-", "ten-a")
    assert a != b and a.startswith("p-ten-a-") and b == "p-ten-a"
    assert all(c.isalnum() or c == "-" for c in tenant_key_name("", "a/b c_é"))


async def test_shared_key_is_rotated_but_never_destroyed(local_kms, engine):
    ring = open_keyring(local_kms.config(key_id="org-kek"), engine)
    # A configured key is the operator's to make (for `local`, a first rotate makes it).
    assert [r.kek_version for r in await rotate(ring)] == ["1"]
    a = await ring.seal("ten_a", "memory", "m", "1", b"a")
    b = await ring.seal("ten_b", "memory", "m", "1", b"b")
    assert parse_header(a).kek_id == parse_header(b).kek_id == "org-kek"
    assert [(r.kek_id, r.kek_version) for r in await rotate(ring)] == [("org-kek", "2")]
    report = await shred(ring, "ten_a")
    assert report.kek_destroyed is None and report.data_keys_deleted == 1
    ring.forget()
    assert await ring.open("ten_b", "memory", "m", "1", b) == b"b"  # the shared KEK still works


async def test_tenant_brings_its_own_key(local_kms, engine, tmp_path):
    from multihome.crypto import init_key_file

    own = init_key_file(tmp_path / "acme.key")
    cfg = local_kms.config(
        tenants={"acme": {"backend": "local", "key_id": "acme-byok", "local": {"key_file": str(own)}}}
    )
    ring = open_keyring(cfg, engine)
    await rotate(ring, "acme")  # the tenant's key, made by its operator
    s = await ring.seal("acme", "credentials", "c", "1", b"acme")
    assert parse_header(s).kek_id == "acme-byok"
    assert b"acme-byok" in own.read_bytes() and b"acme-byok" not in local_kms.key_file.read_bytes()
    other = await ring.seal("zeta", "credentials", "c", "1", b"zeta")
    assert parse_header(other).kek_id == "multihome-zeta"
    ring.forget()
    assert await ring.open("acme", "credentials", "c", "1", s) == b"acme"
