"""Rotation, re-wrapping and crypto-shredding: the library functions behind `multihome kms rotate`,
`multihome kms rewrap` and `multihome kms shred --tenant T` (docs/encryption.md).

- `rotate`: a new KEK version; active data keys are retired so new seals get new data keys wrapped
  under it. Old versions still unwrap what was sealed before.
- `rewrap`: every stored data key re-wrapped under its KEK's newest version, in batches, with a
  progress callback. Seals and opens go on meanwhile (an unwrapped key in the cache does not
  change; a row changed under it is skipped and reported). Safe to interrupt and run again.
- `shred`: the tenant's KEK destroyed (when Multihome created it for that tenant) and its wrapped
  data keys deleted, so nothing it stored opens again; every other tenant untouched.
Each one is an audit event (op "rotate" / "rewrap" per data key / "shred").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .datakeys import DataKeyRow
from .errors import KmsRefused
from .keks import Kek
from .keyring import Keyring

Progress = Callable[[int, int], object]  # (data keys done, total)


class Rotation(NamedTuple):
    kms: str
    kek_id: str
    kek_version: str  # "" where the KMS does not expose versions (AWS)


class RewrapReport(NamedTuple):
    total: int
    rewrapped: int
    skipped: int  # changed or deleted while being re-wrapped: run again to cover them
    failed: list[tuple[str, str]]  # (data key id, why): refused by the KMS


class ShredReport(NamedTuple):
    tenant: str
    data_keys_deleted: int
    kek_destroyed: str | None  # the KEK id, when Multihome owned it


async def rotate(keyring: Keyring, tenant: str | None = None) -> list[Rotation]:
    """A new version of `tenant`'s KEK, or of every KEK in use (and the shared one) when None."""
    tenants = [tenant] if tenant is not None else await keyring.repo.tenants()
    keks: dict[tuple[int, str], tuple[Kek, list[str]]] = {}
    for t in tenants:
        kek = keyring.resolver.kek_for(t)
        keks.setdefault((id(kek.backend), kek.kek_id), (kek, []))[1].append(t)
    shared = keyring.resolver.shared_kek()
    if tenant is None and shared is not None:  # the organisation's shared key, even before first use
        keks.setdefault((id(shared.backend), shared.kek_id), (shared, []))
    done = []
    for kek, users in keks.values():
        version = await keyring.kms_call(
            "rotate",
            kek.backend,
            tenant,
            None,
            kek.kek_id,
            None,
            None,
            kek.backend.create_key_version(kek.kek_id),
            {"tenants": len(users)},
        )
        done.append(Rotation(kek.backend.label, kek.kek_id, version))
        if users:
            await keyring.repo.retire(tenants=users)
            for t in users:
                keyring.forget(t, active_only=True)
    return done


async def rewrap(
    keyring: Keyring, *, tenant: str | None = None, batch_size: int = 100, progress: Progress | None = None
) -> RewrapReport:
    """Re-wrap stored data keys (one tenant's, or all) under the newest KEK versions."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = await keyring.repo.count(tenant)
    done = rewrapped = skipped = 0
    failed: list[tuple[str, str]] = []
    after = ""
    while True:
        rows = await keyring.repo.page(after, batch_size, tenant)
        if not rows:
            break
        after = rows[-1].id
        changes: list[tuple[DataKeyRow, bytes, str]] = []
        for row in rows:
            try:
                new = await keyring.row_call("rewrap", row, lambda b: b.rewrap)
            except KmsRefused as exc:
                failed.append((row.id, str(exc)))
                continue
            changes.append((row, new.wrapped, new.kek_version))
        stored = await keyring.repo.set_wrapped(changes) if changes else 0
        rewrapped += stored
        skipped += len(changes) - stored
        done += len(rows)
        if progress is not None:
            progress(min(done, total), total)
    return RewrapReport(total, rewrapped, skipped, failed)


async def shred(keyring: Keyring, tenant: str) -> ShredReport:
    """Make everything `tenant` stored unreadable: its KEK first (so a failure leaves nothing half
    done that matters), then its wrapped data keys, then this process's cached keys. Other replicas
    drop cached keys of the tenant within `kms.cache_ttl_s`."""
    kek = keyring.resolver.kek_for(tenant)
    destroyed = None
    if kek.owned:
        await keyring.kms_call(
            "destroy_key", kek.backend, tenant, None, kek.kek_id, None, None, kek.backend.destroy(kek.kek_id)
        )
        destroyed = kek.kek_id
    deleted = await keyring.repo.delete_tenant(tenant)
    keyring.forget(tenant)
    keyring.emit(
        "shred",
        kek.backend.label,
        tenant,
        None,
        destroyed,
        None,
        None,
        "ok",
        detail={"data_keys_deleted": deleted, "kek_destroyed": destroyed is not None},
    )
    return ShredReport(tenant, deleted, destroyed)
