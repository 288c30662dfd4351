"""The `local` backend's key file: created 0600, refused when others may read it, KEKs per tenant."""

from __future__ import annotations

import os
import stat

import pytest

from multihome.crypto import KmsRefused, init_key_file
from multihome.crypto.backends.local import LocalKms

pytestmark = pytest.mark.anyio


def test_init_creates_0600_and_refuses_to_overwrite(tmp_path):
    path = init_key_file(tmp_path / "sub" / "kms.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        init_key_file(path)
    assert init_key_file(path, exist_ok=True) == path


async def test_key_file_readable_by_others_is_refused(tmp_path):
    path = init_key_file(tmp_path / "kms.key")
    os.chmod(path, 0o644)
    kms = LocalKms(path)
    with pytest.raises(KmsRefused, match="0644: group or others may read it; run `chmod 600"):
        await kms.generate_data_key("k", {}, create=True)
    with pytest.raises(KmsRefused, match="0644"):
        init_key_file(path, exist_ok=True)


async def test_missing_key_file_names_the_command(tmp_path):
    with pytest.raises(KmsRefused, match="multihome kms init"):
        await LocalKms(tmp_path / "none.key").generate_data_key("k", {}, create=True)


async def test_versions_context_and_destroy(tmp_path):
    kms = LocalKms(init_key_file(tmp_path / "kms.key"))
    new = await kms.generate_data_key("k", {"t": "1"}, create=True)
    assert new.kek_version == "1" and len(new.plaintext) == 32
    with pytest.raises(KmsRefused, match="with this context"):
        await kms.decrypt("k", "1", new.wrapped, {"t": "2"})
    assert await kms.create_key_version("k") == "2"
    assert await kms.decrypt("k", "1", new.wrapped, {"t": "1"}) == new.plaintext
    re = await kms.rewrap("k", "1", new.wrapped, {"t": "1"})
    assert re.kek_version == "2"
    kms.drop_version("k", "1")  # the old version gone: old wraps fail, rewrapped ones open
    with pytest.raises(KmsRefused, match="no version 1"):
        await kms.decrypt("k", "1", new.wrapped, {"t": "1"})
    assert await kms.decrypt("k", "2", re.wrapped, {"t": "1"}) == new.plaintext
    await kms.destroy("k")
    with pytest.raises(KmsRefused, match="destroyed"):
        await kms.decrypt("k", "2", re.wrapped, {"t": "1"})
    assert stat.S_IMODE((tmp_path / "kms.key").stat().st_mode) == 0o600
    with pytest.raises(KmsRefused, match="no key"):
        await kms.generate_data_key("other", {}, create=False)


def test_every_change_of_the_key_file_is_durable_with_its_name(tmp_path, monkeypatch):
    """A new KEK, a new version, a destroyed one, the file's creation: each rename (or link) is followed by
    an fsync of the directory, before any data key is wrapped under what the file now holds. Without it, a
    machine that crashed after `kms rotate` could come back with the old file, while the database holds
    data keys wrapped under the new version: what they sealed would never open again."""
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link
    log: list[str] = []

    def fsync(fd: int) -> None:
        log.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def renamed(real):
        def rename(src, dst, *args, **kwargs):
            real(src, dst, *args, **kwargs)
            log.append("renamed")

        return rename

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", renamed(real_replace))
    monkeypatch.setattr(os, "link", renamed(real_link))
    path = init_key_file(tmp_path / "kms.key")
    assert log == ["fsync file", "renamed", "fsync dir"], log
    kms = LocalKms(path)
    for change in (kms._create, kms._rotate, kms._destroy):
        log.clear()
        change("k")
        assert log == ["fsync file", "renamed", "fsync dir"], (change.__name__, log)


@pytest.mark.parametrize("value", ["not base64 at all!", "c2hvcnQ="])  # not base64; 5 bytes, no AES key
async def test_a_key_file_holding_a_malformed_key_is_refused_not_a_crash(tmp_path, value):
    """A hand-edited or damaged key file: a KmsRefused naming the key and version (a 503 `kms_refused`), not a
    binascii or AESGCM ValueError that was a 500 on every use of the tenant's records."""
    import msgspec

    path = init_key_file(tmp_path / "kms.key")
    kms = LocalKms(path)
    new = await kms.generate_data_key("k", {"t": "a"}, create=True)
    doc = msgspec.json.decode(path.read_bytes())
    doc["keys"]["k"]["versions"]["1"] = value
    path.write_bytes(msgspec.json.encode(doc))
    for use in (
        kms.decrypt("k", "1", new.wrapped, {"t": "a"}),
        kms.generate_data_key("k", {"t": "a"}, create=False),
    ):
        with pytest.raises(KmsRefused, match="key 'k' version 1 in the key file is malformed"):
            await use


@pytest.mark.parametrize("length", [16, 5])  # AES-128 would be taken; 5 bytes was a ValueError (a 500)
async def test_a_data_key_that_is_not_256_bits_is_refused(local_kms, engine, length):
    """Whatever a KMS hands back as a data key (an Azure key wrapped by anyone holding the public half, a
    misbehaving endpoint) is used only if it is 256 bits: else KmsRefused, audited, and nothing stored."""
    from multihome.crypto import open_keyring

    from .harness import Recording

    class Short(Recording):
        async def generate_data_key(self, kek_id, context, *, create):
            new = await super().generate_data_key(kek_id, context, create=create)
            return new._replace(plaintext=new.plaintext[:length])

        async def decrypt(self, kek_id, kek_version, wrapped, context):
            return (await super().decrypt(kek_id, kek_version, wrapped, context))[:length]

    events: list = []
    short = open_keyring(
        local_kms.config(), engine, audit=events.append, build=lambda t, w: Short(local_kms.build(t, w))
    )
    with pytest.raises(KmsRefused, match="not a 256-bit key"):
        await short.seal("t1", "memory", "m", "1", b"x")
    assert await short.repo.count() == 0 and events[-1].op == "generate" and events[-1].outcome == "refused"
    sound = open_keyring(local_kms.config(), engine)
    sealed = await sound.seal("t1", "memory", "m", "1", b"x")
    with pytest.raises(KmsRefused, match="not a 256-bit key"):
        await short.open("t1", "memory", "m", "1", sealed)
    assert events[-1].op == "unwrap" and events[-1].outcome == "refused"
    await short.close()
    await sound.close()
