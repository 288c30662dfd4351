"""Which key-encryption key wraps a tenant's data keys, and which backend opens a stored one.

The organisation's `kms:` target serves every tenant without an override in `kms.tenants`. A target
with `key_id` set shares that KEK between its tenants; without it each tenant gets its own KEK,
`key_prefix` + the tenant id (made safe for every KMS's key-name rules), created on first use and
destroyed by a shred (`owned`). A key named in the config is the organisation's or the tenant's
own, so Multihome never destroys it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import NamedTuple

from ..config.kms import DEFAULT_TIMEOUT_S, KmsConfig, KmsTarget, bounded
from .errors import KmsRefused
from .kms import KmsBackend

BackendFactory = Callable[[KmsTarget, str], KmsBackend]
_UNSAFE = re.compile(r"[^0-9A-Za-z-]")


class Kek(NamedTuple):
    backend: KmsBackend
    kek_id: str
    owned: bool  # created by Multihome for this tenant alone: a shred destroys it


def tenant_key_name(prefix: str, tenant: str) -> str:
    """`prefix` + tenant with only [0-9A-Za-z-] (Azure's rule, the strictest); a tenant id that had
    to change gets a hash suffix so two tenants never map to one name."""
    safe = _UNSAFE.sub("-", tenant)
    if safe != tenant:
        safe += "-" + hashlib.sha256(tenant.encode()).hexdigest()[:8]
    return prefix + safe


class KekResolver:
    def __init__(self, config: KmsConfig, build: BackendFactory) -> None:
        self._org = config
        org = bounded(config, config)
        self._org_backend = build(org, "kms")
        targets = {t: bounded(config, target) for t, target in config.tenants.items()}
        self._tenant_backends = {t: build(target, f"kms.tenants.{t}") for t, target in targets.items()}
        self._overrides = config.tenants
        # The deadline of one operation on each backend (`timeout_s`, filled in by `bounded`).
        self._deadlines = {id(self._org_backend): org.timeout_s or DEFAULT_TIMEOUT_S}
        for t, target in targets.items():
            self._deadlines[id(self._tenant_backends[t])] = target.timeout_s or DEFAULT_TIMEOUT_S

    def deadline(self, backend: KmsBackend) -> float:
        """Seconds one operation on `backend` may take, its retries included (`kms.timeout_s`)."""
        return self._deadlines.get(id(backend), DEFAULT_TIMEOUT_S)

    def backends(self) -> list[KmsBackend]:
        return [self._org_backend, *self._tenant_backends.values()]

    def _target(self, tenant: str) -> tuple[KmsTarget, KmsBackend]:
        override = self._overrides.get(tenant)
        if override is not None:
            return override, self._tenant_backends[tenant]
        return self._org, self._org_backend

    def kek_for(self, tenant: str) -> Kek:
        """The KEK new data keys of `tenant` are wrapped under."""
        target, backend = self._target(tenant)
        if target.key_id is not None:
            return Kek(backend, target.key_id, False)
        return Kek(backend, tenant_key_name(target.key_prefix, tenant), True)

    def shared_kek(self) -> Kek | None:
        """The organisation's shared KEK (`kms.key_id`), if it has one."""
        if self._org.key_id is None:
            return None
        return Kek(self._org_backend, self._org.key_id, False)

    def backend_for(self, tenant: str, backend_name: str) -> KmsBackend:
        """The configured backend that opens a data key stored as wrapped by `backend_name`: the
        tenant's own if it matches, else the organisation's (a tenant moved to its own key keeps
        reading what was sealed before)."""
        _, backend = self._target(tenant)
        if backend.name == backend_name:
            return backend
        if self._org_backend.name == backend_name:
            return self._org_backend
        raise KmsRefused(
            f"{backend_name} KMS",
            f"data keys of tenant {tenant!r} are wrapped by the {backend_name!r} "
            "KMS, which is not configured for it (kms.backend / kms.tenants)",
        )
