"""Provider credentials set through the admin API, kept sealed in `provider_credentials`.

A provider whose config says `auth.api_key_from: store` gets its API key from here: set, rotated
and deleted with `PUT`/`DELETE /admin/v1/provider-credentials/{provider}` (api/admin/credentials.py).
The key is sealed under purpose `credentials` of the organisation (`ORG`), bound to its row, before
anything is written: a KMS that cannot be reached fails the change with `KmsUnavailable` and nothing
is stored. What is ever shown is that a key is set, when, by whom, and its last 4 characters (none
for a key shorter than 16).

`ProviderCredentials` also hands each key to the provider's adapter: at start-up, at once on this
replica after a change, and on every other replica within `interval_s` (each compares the rows'
`version` with what it applied; one small query per interval, no KMS call unless a key changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ..outage_log import OutageLog
from ..storage.engine import is_sqlite, write_connection
from ..storage.errors import outage
from ..storage.pg_reads import HeldReads
from ..storage.rows import DECODE_ERRORS, RowProblem, Unreadable, problem, stamp
from ..storage.tables import provider_credentials as t
from .envelope import stored_bytes
from .errors import CryptoError
from .keyring import Keyring

ORG = "_org"  # the data-key owner of organisation-wide secrets (never a stored tenant's id)
PURPOSE = "credentials"
TABLE = "provider_credentials"
_MIN_FINGERPRINTED = 16  # a shorter key shows no fingerprint: 4 characters would be too much of it

log = logging.getLogger("multihome.crypto")
_VERSIONS = sa.select(t.c.provider, t.c.version)  # the poll's statement (one object: compiled once)

Apply = Callable[[str, "str | None"], None]  # (provider, key or None): what the adapter sends from now on


class CredentialInfo(NamedTuple):
    provider: str
    fingerprint: str  # "" or the key's last 4 characters
    version: int
    updated_at: datetime
    updated_by: str


def fingerprint(secret: str) -> str:
    return secret[-4:] if len(secret) >= _MIN_FINGERPRINTED else ""


class CredentialStore:
    """Sealed rows of `provider_credentials`: the only reader and writer of that table."""

    def __init__(self, keyring: Keyring, engine: AsyncEngine, *, polled: bool = False) -> None:
        self.keyring = keyring
        self.engine = engine
        # Polled, on PostgreSQL: `versions` alone on a held connection, one round trip instead of the
        # engine's six (storage/pg_reads.py). Not polled, no connection is held for it.
        self._pg_reads = HeldReads(engine, size=1) if polled and not is_sqlite(engine) else None

    async def close(self) -> None:
        """Give back the poll's held connection (a later `versions` checks one out for itself)."""
        if self._pg_reads is not None:
            await self._pg_reads.close()

    async def put(self, provider: str, secret: str, actor: str) -> CredentialInfo:
        """Seal, then write (a new version of) the provider's key. Raises KmsError before anything is stored."""
        sealed = await self.keyring.seal(ORG, PURPOSE, TABLE, provider, secret.encode())
        info = CredentialInfo(provider, fingerprint(secret), 0, datetime.now(UTC), actor[:200])
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                old = (await conn.execute(sa.select(t.c.version).where(t.c.provider == provider))).scalar()
                # A version that is not a number (SQLite keeps any value): this write mends the row.
                info = info._replace(version=(old if type(old) is int else 0) + 1)
                values = {
                    "sealed": sealed,
                    "fingerprint": info.fingerprint,
                    "version": info.version,
                    "updated_at": info.updated_at,
                    "updated_by": info.updated_by,
                }
                if old is None:
                    await conn.execute(sa.insert(t).values(provider=provider, **values))
                else:
                    await conn.execute(sa.update(t).where(t.c.provider == provider).values(**values))
        finally:
            await conn.close()
        return info

    async def delete(self, provider: str) -> bool:
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                return (await conn.execute(sa.delete(t).where(t.c.provider == provider))).rowcount > 0
        finally:
            await conn.close()

    async def infos(self) -> tuple[dict[str, CredentialInfo], dict[str, Unreadable]]:
        """What is stored of each provider's key, and the rows that cannot be read (SQLite keeps any value in
        any column: a time that is not a time), by provider: never a 500 for the list (docs/storage.md)."""
        # The time as stored, parsed per row: the driver's decoding of one bad value would fail them all.
        q = sa.select(
            t.c.provider, t.c.fingerprint, t.c.version, sa.type_coerce(t.c.updated_at, sa.Text), t.c.updated_by
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        infos, bad = {}, {}
        for provider, fp, version, updated_at, updated_by in rows:
            try:
                if type(version) is not int or not isinstance(fp, str) or not isinstance(updated_by, str):
                    raise RowProblem("version, fingerprint or updated_by is not of its type")
                infos[provider] = CredentialInfo(provider, fp, version, stamp(updated_at), updated_by)
            except DECODE_ERRORS as exc:
                bad[provider] = Unreadable(TABLE, str(provider), None, problem(exc))
        return infos, bad

    async def versions(self) -> dict[str, int]:
        if self._pg_reads is not None:
            return {r.provider: r.version for r in await self._pg_reads.fetch(_VERSIONS, {})}
        async with self.engine.connect() as conn:
            return {r.provider: r.version for r in (await conn.execute(_VERSIONS)).all()}

    async def secret(self, provider: str) -> tuple[str, int] | None:
        """The provider's key and its version (opened: may reach the KMS on a cold cache), or None."""
        async with self.engine.connect() as conn:
            r = (await conn.execute(sa.select(t.c.sealed, t.c.version).where(t.c.provider == provider))).first()
        if r is None:
            return None
        # Not bytes (SQLite keeps text in a blob column): opens as no envelope (MalformedCiphertext), a
        # CryptoError the callers log, not a TypeError that failed the gateway's start.
        plain = await self.keyring.open(ORG, PURPOSE, TABLE, provider, stored_bytes(r.sealed))
        return plain.decode(), r.version


class ProviderCredentials:
    """The store plus the adapters it feeds: start-up load, a change applied at once here, and a
    poll every `interval_s` for changes made on other replicas."""

    def __init__(self, providers: list[str], configured: list[str], apply: Apply, interval_s: float) -> None:
        self.providers = providers  # the providers with `auth.api_key_from: store`
        self.configured = configured  # every provider in the config (for the admin API's messages)
        self._apply = apply
        self._interval = interval_s
        self.store: CredentialStore | None = None
        self._applied: dict[str, int] = {}  # provider -> the version its adapter holds (0: none)
        self._task: asyncio.Task[None] | None = None

    async def start(self, keyring: Keyring, engine: AsyncEngine) -> None:
        self.store = CredentialStore(keyring, engine, polled=bool(self.providers))
        await self.sync()
        if self.providers:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def sync(self, only: str | None = None) -> None:
        """Hand every changed key (or `only` this provider's) to its adapter. A key that cannot be
        opened now (KMS down) is logged and tried again on the next poll; the adapter keeps the old one."""
        assert self.store is not None
        versions = await self.store.versions()
        for provider in [only] if only is not None else self.providers:
            version = versions.get(provider, 0)
            if self._applied.get(provider, 0) == version:
                continue
            try:
                found = await self.store.secret(provider) if version else None
            except CryptoError as exc:
                log.error(
                    "provider %s: its stored API key cannot be opened (%s); keeping the previous one", provider, exc
                )
                continue
            key, version = found if found is not None else (None, 0)
            self._apply(provider, key)
            self._applied[provider] = version
            log.info("provider %s: API key %s (version %d)", provider, "applied" if key else "removed", version)

    async def _poll(self) -> None:
        failing = OutageLog(
            log,
            "provider credentials: reading the store failed",
            recovered="provider credentials: the store read again",
        )
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failing.failed(exc, traceback=outage(exc) is None)
            else:
                failing.ok()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.store is not None:
            await self.store.close()
