"""The `local` KMS: key-encryption keys in a key file on this machine (the embedded default, so a
single-node install and `make demo` need no KMS).

The file is JSON, mode 0600, created by `init_key_file` (what `multihome kms init` calls): a map of
KEK name -> versions (random 32-byte AES keys, base64). A file that group or others may read is
refused. Wrapping is AES-256-GCM under the KEK version with the encryption context as associated
data: `0x01 | version (u32) | nonce (12) | ciphertext+tag`. Every change (a new KEK, a new version,
a destroyed KEK) rewrites the file atomically under an exclusive lock, so several processes may
share it. Destroying a KEK removes its versions from the file; copies of the file in backups still
hold them (docs/encryption.md "Shredding").
"""

from __future__ import annotations

import asyncio
import base64
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import KmsRefused
from ..kms import KmsBackend, NewDataKey, Rewrapped

FORMAT = "multihome.kms.local.v1"
_WRAP_VERSION = 1
_HEAD = struct.Struct(">BI")


class _Kek(msgspec.Struct):
    versions: dict[str, str]  # version number -> base64 key
    latest: int


class _KeyFile(msgspec.Struct):
    format: str
    keys: dict[str, _Kek]


def init_key_file(path: str | os.PathLike[str], *, exist_ok: bool = False) -> Path:
    """Create an empty key file with mode 0600 (`multihome kms init`). KEKs are added on first use.

    Written whole to a temporary file, then linked into place (which fails if the file exists), so
    a process that finds the file (several gateway workers making it on their first seal) never
    reads it half written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists():
        if not exist_ok:
            raise FileExistsError(errno.EEXIST, "key file exists", str(p))
        _check_mode(p)
        return p
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{os.urandom(4).hex()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(_KeyFile(format=FORMAT, keys={})))
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, p)
        _sync_dir(p)
    except FileExistsError:
        if not exist_ok:
            raise
        _check_mode(p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def _sync_dir(path: Path) -> None:
    """The directory entry made durable too: a file's own fsync does not cover its name, so a machine that
    crashed after a rename could come back with the old key file, while the database holds data keys the
    new one wrapped (committed, fsynced): everything sealed under them would never open again."""
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KmsRefused(
            f"local KMS ({path})", f"key file mode is {mode:04o}: group or others may read it; run `chmod 600 {path}`"
        )


def context_bytes(context: Mapping[str, str]) -> bytes:
    """The encryption context in one canonical byte form (sorted keys)."""
    return msgspec.json.encode(dict(sorted(context.items())))


class LocalKms(KmsBackend):
    name: ClassVar[str] = "local"

    def __init__(self, key_file: str | os.PathLike[str], *, create_missing: bool = False) -> None:
        self._path = Path(key_file)
        # The gateway's default: no key file yet and no data key it wrapped stored, so the first
        # seal creates it (crypto/service.py); `multihome kms init` is the explicit way.
        self._create_missing = create_missing
        self._cached: tuple[float, int, _KeyFile] | None = None

    @property
    def label(self) -> str:
        return f"local KMS ({self._path})"

    # -- the file --------------------------------------------------------------------------------
    def _read(self) -> _KeyFile:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            raise KmsRefused(self.label, "key file not found; create it with `multihome kms init`") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            _check_mode(self._path)
        if self._cached is not None and self._cached[:2] == (st.st_mtime, st.st_size):
            return self._cached[2]
        try:
            data = msgspec.json.decode(self._path.read_bytes(), type=_KeyFile)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise KmsRefused(self.label, "key file is not a Multihome local key file") from None
        if data.format != FORMAT:
            raise KmsRefused(self.label, f"key file format {data.format!r} is not {FORMAT!r}")
        self._cached = (st.st_mtime, st.st_size, data)
        return data

    @contextmanager
    def _locked(self) -> Iterator[_KeyFile]:
        """Exclusive lock, fresh read; the caller's changes to the yielded file are written on exit."""
        lock = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._cached = None
            data = self._read()
            yield data
            tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.encode(data))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
            _sync_dir(self._path)  # before any data key is wrapped under what it holds
            self._cached = None
        finally:
            os.close(lock)

    def _kek(self, kek_id: str, version: int | None = None) -> tuple[int, AESGCM]:
        kek = self._read().keys.get(kek_id)
        if kek is None:
            raise KmsRefused(self.label, f"no key {kek_id!r} (destroyed, or never created)")
        v = kek.latest if version is None else version
        raw = kek.versions.get(str(v))
        if raw is None:
            raise KmsRefused(self.label, f"key {kek_id!r} has no version {v}")
        try:
            return v, AESGCM(base64.b64decode(raw, validate=True))
        except ValueError:  # binascii.Error is one: a damaged or hand-edited file, the KMS's problem, not a crash
            raise KmsRefused(self.label, f"key {kek_id!r} version {v} in the key file is malformed") from None

    def _create(self, kek_id: str) -> None:
        with self._locked() as data:
            if kek_id not in data.keys:
                data.keys[kek_id] = _Kek(versions={"1": _new_key()}, latest=1)

    # -- KmsBackend -----------------------------------------------------------------------------
    # Every operation runs in a worker thread: it may stat, read or rewrite the key file.
    async def generate_data_key(self, kek_id: str, context: Mapping[str, str], *, create: bool) -> NewDataKey:
        return await asyncio.to_thread(self._generate, kek_id, context, create)

    def _generate(self, kek_id: str, context: Mapping[str, str], create: bool) -> NewDataKey:
        if create and self._create_missing and not self._path.exists():
            init_key_file(self._path, exist_ok=True)
        if create and kek_id not in self._read().keys:
            self._create(kek_id)
        plaintext = AESGCM.generate_key(bit_length=256)
        version, wrapped = self._wrap(kek_id, plaintext, context)
        return NewDataKey(plaintext, wrapped, kek_id, str(version))

    def _wrap(self, kek_id: str, plaintext: bytes, context: Mapping[str, str]) -> tuple[int, bytes]:
        version, aead = self._kek(kek_id)
        nonce = os.urandom(12)
        return version, _HEAD.pack(_WRAP_VERSION, version) + nonce + aead.encrypt(
            nonce, plaintext, context_bytes(context)
        )

    def _unwrap(self, kek_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        if len(wrapped) < _HEAD.size + 12 + 16 or wrapped[0] != _WRAP_VERSION:
            raise KmsRefused(self.label, "not a local-KMS wrapped key")
        _, version = _HEAD.unpack_from(wrapped)
        _, aead = self._kek(kek_id, version)
        try:
            return aead.decrypt(wrapped[5:17], wrapped[17:], context_bytes(context))
        except InvalidTag:
            raise KmsRefused(
                self.label, f"wrapped key does not decrypt under key {kek_id!r} version {version} with this context"
            ) from None

    async def decrypt(self, kek_id: str, kek_version: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        return await asyncio.to_thread(self._unwrap, kek_id, wrapped, context)

    async def rewrap(self, kek_id: str, kek_version: str, wrapped: bytes, context: Mapping[str, str]) -> Rewrapped:
        return await asyncio.to_thread(self._rewrap, kek_id, wrapped, context)

    def _rewrap(self, kek_id: str, wrapped: bytes, context: Mapping[str, str]) -> Rewrapped:
        version, new = self._wrap(kek_id, self._unwrap(kek_id, wrapped, context), context)
        return Rewrapped(new, str(version))

    async def create_key_version(self, kek_id: str) -> str:
        return await asyncio.to_thread(self._rotate, kek_id)

    def _rotate(self, kek_id: str) -> str:
        with self._locked() as data:
            kek = data.keys.get(kek_id)
            if kek is None:
                data.keys[kek_id] = kek = _Kek(versions={"1": _new_key()}, latest=1)
            else:
                kek.latest += 1
                kek.versions[str(kek.latest)] = _new_key()
            return str(kek.latest)

    async def destroy(self, kek_id: str) -> None:
        await asyncio.to_thread(self._destroy, kek_id)

    def _destroy(self, kek_id: str) -> None:
        with self._locked() as data:
            data.keys.pop(kek_id, None)

    def kek_versions(self) -> dict[str, tuple[str, list[str]]]:
        """KEK name -> (latest version, every version held), for `multihome kms status`: never the keys."""
        return {
            name: (str(kek.latest), sorted(kek.versions, key=int)) for name, kek in sorted(self._read().keys.items())
        }

    def drop_version(self, kek_id: str, version: str) -> None:
        """Remove one KEK version (what disabling an old version in a real KMS does); for tests and
        for retiring a version once `rewrap` has moved every data key off it."""
        with self._locked() as data:
            kek = data.keys.get(kek_id)
            if kek is not None and str(kek.latest) != version:
                kek.versions.pop(version, None)


def _new_key() -> str:
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
