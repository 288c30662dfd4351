"""The gateway's keyring lifecycle: opened at start-up when storage is configured, closed at shutdown.

Opening makes no KMS call (a gateway that stores nothing pays nothing; the first seal or open
does), and at most one query: whether a missing local key file may be created. Every key use that reaches the KMS is handed to the audit trail as a `kms`
event. With the `local` backend and no key file yet, the first seal creates it (mode 0600), so a
plain install needs nothing else and a gateway that never seals makes no file; unless the database
already holds data keys the local KMS wrapped: then the file was lost or moved, and making a new
one would hide that, so start-up logs it instead and every use of those keys fails with
`KmsRefused` naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ..audit.events import KmsEvent
from ..config import Config
from ..config.kms import KmsConfig, KmsTarget
from ..storage.tables import data_keys
from . import BackendFactory, open_keyring
from .backends import build_backend
from .backends.local import LocalKms
from .capture import CaptureReader, CaptureWriter
from .credentials import Apply, ProviderCredentials
from .keyring import Keyring
from .kms import KmsBackend

log = logging.getLogger("multihome.crypto")


class CryptoServices:
    """Everything the gateway seals, started in order once storage has: the keyring, then the
    provider credentials it opens (handed to the adapters through `apply`) and the content
    capture writer; closed in reverse (queued captures are written before the keyring closes)."""

    def __init__(
        self,
        config: Config,
        storage: Any,
        audit_log: Any,
        stored_key_providers: list[str],
        apply: Apply,
    ) -> None:
        self.keyrings = KeyringService(config.kms, storage, audit_log)
        self.credentials = ProviderCredentials(
            stored_key_providers, list(config.providers), apply, config.storage.refresh_s
        )
        self.capture = CaptureWriter(config.capture) if config.capture.tenants else None
        self.captures: CaptureReader | None = None

    @property
    def keyring(self) -> Keyring:
        if self.keyrings.keyring is None:
            raise RuntimeError("the keyring is not open (storage has not started)")
        return self.keyrings.keyring

    async def start(self) -> None:
        await self.keyrings.start()
        engine = self.keyrings.engine
        self.captures = CaptureReader(self.keyring, engine)
        await self.credentials.start(self.keyring, engine)
        if self.capture is not None:
            self.capture.start(self.keyring, engine)

    async def close(self) -> None:
        if self.capture is not None:
            await self.capture.close()
        await self.credentials.close()
        await self.keyrings.close()


class KeyringService:
    def __init__(self, config: KmsConfig, storage: Any, audit_log: Any = None) -> None:
        self.config = config
        self._storage = storage  # storage.service.StorageService: its engine exists once it started
        self._audit_log = audit_log  # audit.AuditLog, or None
        self.keyring: Keyring | None = None

    @property
    def engine(self) -> AsyncEngine:
        engine: AsyncEngine = self._storage.store.engine
        return engine

    async def start(self) -> None:
        build = _building(await creatable_key_files(self.config, self.engine))
        self.keyring = open_keyring(
            self.config, self.engine, audit=self._audit if self._audit_log else None, build=build
        )

    def _audit(self, event: KmsEvent) -> None:
        assert self._audit_log is not None
        future = self._audit_log.append("kms", event)
        future.add_done_callback(_swallow)

    async def close(self) -> None:
        if self.keyring is not None:
            await self.keyring.close()
            self.keyring = None


def _swallow(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a kms audit event was not written: %s", future.exception())


async def creatable_key_files(config: KmsConfig, engine: AsyncEngine) -> set[Path]:
    """The `local` backend's key files that do not exist yet and may be created by the first seal:
    those of a database holding no data key the local KMS wrapped. A file missing while such keys
    are stored was lost or moved; making a new one would hide that, so it is logged instead."""
    files = {Path(target.local.key_file) for target in (config, *config.tenants.values()) if target.backend == "local"}
    missing = {f for f in files if not f.exists()}
    if not missing:
        return set()
    async with engine.connect() as conn:
        wrapped = (
            await conn.execute(sa.select(sa.func.count()).select_from(data_keys).where(data_keys.c.backend == "local"))
        ).scalar_one()
    if not wrapped:
        return missing
    for f in sorted(missing):
        log.error(
            "local KMS key file %s is missing but %d data keys wrapped by the local KMS are stored: restore "
            "the file (records sealed under it do not open without it)",
            f,
            wrapped,
        )
    return set()


def _building(creatable: set[Path]) -> BackendFactory:
    def build(target: KmsTarget, where: str) -> KmsBackend:
        if target.backend == "local" and Path(target.local.key_file) in creatable:
            return LocalKms(target.local.key_file, create_missing=True)
        return build_backend(target, where)

    return build
