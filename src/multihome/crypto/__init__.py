"""Envelope encryption of everything Multihome stores, under the organisation's KMS (docs/encryption.md).

Entry points:
- `open_keyring(config.kms, engine, audit=...)` -> `Keyring` with `seal` / `open` (what every store uses);
- `rotate`, `rewrap`, `shred` (what `multihome kms rotate|rewrap|shred` call);
- `init_key_file(path)` (what `multihome kms init` calls: the `local` backend's key file, mode 0600).
Errors a caller tells apart are in `errors`; `KmsUnavailable` carries `.kms` for a 503 naming it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from ..config.kms import KmsConfig
from .backends import build_backend
from .backends.local import init_key_file
from .datakeys import DataKeyRepo
from .errors import (
    CiphertextMismatch,
    CryptoError,
    DataKeyNotFound,
    KmsError,
    KmsRefused,
    KmsUnavailable,
    MalformedCiphertext,
    WrongBinding,
)
from .keks import BackendFactory, KekResolver
from .keyring import AuditSink, Keyring
from .maintenance import RewrapReport, Rotation, ShredReport, rewrap, rotate, shred
from .purposes import PURPOSES


def open_keyring(
    config: KmsConfig, engine: AsyncEngine, *, audit: AuditSink | None = None, build: BackendFactory = build_backend
) -> Keyring:
    """The keyring for a migrated database. Makes no KMS call: a gateway that stores nothing pays nothing."""
    return Keyring(DataKeyRepo(engine), KekResolver(config, build), config, audit=audit)


__all__ = [
    "PURPOSES",
    "AuditSink",
    "BackendFactory",
    "CiphertextMismatch",
    "CryptoError",
    "DataKeyNotFound",
    "KmsError",
    "KmsRefused",
    "KmsUnavailable",
    "Keyring",
    "MalformedCiphertext",
    "RewrapReport",
    "Rotation",
    "ShredReport",
    "WrongBinding",
    "init_key_file",
    "open_keyring",
    "rewrap",
    "rotate",
    "shred",
]
