"""A key's roles as a write reads them, for the rule that a tenant-admin puts no budget or policy on a key
holding a role only an org-admin grants (auditor, org-admin): checked inside the write's transaction, the
key's row locked on PostgreSQL, so the roles it is judged by are the ones it is written beside."""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa

from ..schema.principal import ORG_GRANTED, ROLES
from .errors import StorageError
from .tables import api_keys

NO_KEY: list[str] = []  # key_roles of a key that is not there: no role


class PrivilegedKey(StorageError):
    """A tenant-admin tried to set a budget or policy on a key holding a role only an org-admin grants (the
    admin API's 403 `insufficient_role`): `roles` are those roles, empty when the key's cannot be read."""

    def __init__(self, key_id: str, roles: tuple[str, ...]) -> None:
        super().__init__(f"key {key_id} holds {', '.join(roles) or 'roles that cannot be read'}")
        self.key_id = key_id
        self.roles = roles


async def key_roles(conn: Any, tenant_id: str, key_id: str, *, lock: bool = False) -> list[str] | None:
    """A key's roles as stored (NO_KEY for no such key), None when they cannot be read; `lock`: its row FOR
    SHARE (PostgreSQL), so they stay what was read until the write commits."""
    q = sa.select(sa.cast(api_keys.c.roles, sa.Text)).where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
    raw = await conn.scalar(q.with_for_update(read=True) if lock else q)  # as text: may not decode
    if raw is None:
        return NO_KEY
    try:
        return msgspec.json.decode(raw, type=list[str])
    except msgspec.DecodeError:
        return None


def org_granted(roles: list[str] | None) -> tuple[str, ...] | None:
    """The roles only an org-admin grants among `roles` (empty: they cannot be read, so may hold one), or
    None when there are none."""
    if roles is not None and all(r in ROLES for r in roles) and ORG_GRANTED.isdisjoint(roles):
        return None
    return tuple(sorted(ORG_GRANTED.intersection(roles))) if roles is not None else ()


async def refuse_privileged_key(conn: Any, tenant_id: str, key_id: str, *, lock: bool) -> None:
    """PrivilegedKey if the key holds a role only an org-admin grants (or roles that cannot be read)."""
    held = org_granted(await key_roles(conn, tenant_id, key_id, lock=lock))
    if held is not None:
        raise PrivilegedKey(key_id, held)
