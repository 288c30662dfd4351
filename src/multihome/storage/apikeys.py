"""API keys: issued once, stored as SHA-256, revoked by setting revoked_at."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa

from ..schema import admin_fields as fields
from ..schema.principal import ENDPOINT_SCOPES, ROLES
from . import rows
from .base import StoreBase, as_utc, checked, nonempty, refuse_past, to_utc, utcnow
from .errors import Invalid, NotFound
from .ids import new_key_prefix, new_key_secret, timed_id
from .keys import hash_key
from .records import KeyRecord
from .row_reads import Page, by_creation, either, is_live, one, read_one, read_page
from .rows import Unreadable
from .tables import api_keys, teams
from .tenancy import _metadata

# A key expires within this many days, or never (expires_at left out): a later date is a typo or
# a wish for a key that never expires, and far-future dates are where date arithmetic overflows.
KEY_MAX_LIFETIME_DAYS = 36525  # 100 years
# Keys not revoked of one tenant at most: every replica holds each (the snapshot's keys, expired ones too, until
# revoked), so a tenant admin making a key after another grew them all for good.
MAX_KEYS_PER_TENANT = 100_000


def key_from_row(r: Any) -> KeyRecord:
    return KeyRecord(
        id=r.id,
        tenant_id=r.tenant_id,
        team_id=r.team_id,
        name=r.name,
        prefix=r.prefix,
        hash=r.hash,
        roles=tuple(r.roles),
        scopes_models=None if r.scopes_models is None else tuple(r.scopes_models),
        scopes_endpoints=None if r.scopes_endpoints is None else tuple(r.scopes_endpoints),
        metadata=dict(r.metadata),
        expires_at=as_utc(r.expires_at),
        revoked_at=as_utc(r.revoked_at),
        created_at=as_utc(r.created_at),
    )


def _str_list(values: Iterable[str] | None, what: str) -> list[str] | None:
    if values is None:
        return None
    values = list(values) if not isinstance(values, str) else values
    checked(fields.strings(values, what))
    return sorted(set(values))


class KeysRepo(StoreBase):
    async def create_key(
        self,
        tenant_id: str,
        *,
        name: str,
        team_id: str | None = None,
        roles: Iterable[str] = ("member",),
        scopes_models: Iterable[str] | None = None,
        scopes_endpoints: Iterable[str] | None = None,
        expires_at: datetime | None = None,
        metadata: dict[str, Any] | None = None,
        actor: str,
    ) -> tuple[KeyRecord, str]:
        """Issue a key. Returns (record, secret); the secret is shown once and never stored."""
        role_list = _str_list(roles, "roles") or []
        if not role_list:
            raise Invalid("a key needs at least one role")
        unknown = [r for r in role_list if r not in ROLES]
        if unknown:
            raise Invalid(f"unknown role(s) {unknown}; roles are {list(ROLES)}")
        endpoints = _str_list(scopes_endpoints, "scopes_endpoints")
        if endpoints == []:  # a key that calls nothing: a slip for "any" (null), as an empty scopes_models
            raise Invalid("scopes_endpoints is empty: omit it (or null) for every endpoint", field="scopes_endpoints")
        strange = [e for e in endpoints or () if e not in ENDPOINT_SCOPES]
        if strange:
            raise Invalid(
                f"unknown endpoint scope(s) {strange}; endpoint scopes are {list(ENDPOINT_SCOPES)} "
                "('responses' covers stored responses and conversations)",
                field="scopes_endpoints",
            )
        expires_at = _expiry(expires_at)
        now = utcnow()
        key_id = timed_id("key", now)
        values = dict(
            id=key_id,
            tenant_id=tenant_id,
            team_id=team_id,
            name=nonempty(name, "name"),
            roles=role_list,
            scopes_models=_str_list(scopes_models, "scopes_models"),
            scopes_endpoints=endpoints,
            metadata=_metadata(metadata),
            expires_at=expires_at,
            revoked_at=None,
            created_at=now,
        )
        # One lock per tenant (PostgreSQL; SQLite serializes writes): concurrent creates cannot all count room
        # for one and all insert.
        async with self._write(lock=f"api_keys:{tenant_id}") as conn:
            await self._require_tenant(conn, tenant_id)
            live = (api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None))
            await refuse_past(
                conn,
                api_keys,
                live,
                MAX_KEYS_PER_TENANT,
                tenant_id,
                "keys not revoked",
                "revoke one it no longer needs first (an expired key counts until revoked)",
            )
            if (
                team_id is not None
                and await conn.scalar(
                    sa.select(teams.c.id).where(teams.c.tenant_id == tenant_id, teams.c.id == team_id)
                )
                is None
            ):
                raise NotFound("team", team_id, tenant_id)
            for _ in range(8):  # 36^8 prefixes: a collision is rare, and retried
                prefix = new_key_prefix()
                if await conn.scalar(sa.select(api_keys.c.id).where(api_keys.c.prefix == prefix)) is None:
                    break
            secret = new_key_secret(prefix)
            values.update(prefix=prefix, hash=hash_key(secret))
            await conn.execute(sa.insert(api_keys).values(**values))
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="key.create",
                object_type="api_key",
                object_id=key_id,
                detail={"name": name, "prefix": prefix, "team_id": team_id, "roles": role_list},
            )
        return key_from_row(_Row(values)), secret

    async def get_key(self, tenant_id: str, key_id: str) -> KeyRecord:
        async with self._read() as conn:
            q = sa.select(api_keys).where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
            return await read_one(conn, q, api_keys, rows.key, "api key", key_id, tenant_id)

    async def page_keys(self, tenant_id: str, limit: int, after: str | None = None) -> Page[KeyRecord]:
        """A page of the tenant's keys, revoked ones too, oldest first, after the key `after`: revoked keys stay
        listed, so the whole list grows with every key ever made (the admin API's list is read a page at a time)."""
        q = sa.select(api_keys).where(api_keys.c.tenant_id == tenant_id)
        async with self._read() as conn:
            return await read_page(conn, q, api_keys, rows.key, api_keys.c.created_at, limit, after, place=by_creation)

    async def key_roles(self, tenant_id: str, key_id: str) -> tuple[str, ...] | None:
        """The key's roles as stored, read on their own (its row as a whole may not be readable); None when
        they are not a list of roles. For who may revoke a key whose row cannot be read (api/admin/keys.py)."""
        where = (api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
        async with self._read() as conn:  # as text: the JSON may be what cannot be decoded
            raw = await conn.scalar(sa.select(sa.cast(api_keys.c.roles, sa.Text)).where(*where))
        if raw is None:
            raise NotFound("api key", key_id, tenant_id)
        try:
            roles = msgspec.json.decode(raw, type=list[str])
        except msgspec.DecodeError:
            return None
        return tuple(roles) if all(r in ROLES for r in roles) else None

    async def revoke_key(self, tenant_id: str, key_id: str, *, actor: str) -> KeyRecord | Unreadable:
        """Revoke now. Revoking a revoked key changes nothing and records nothing. A key whose row cannot be
        read is revoked too (that is how it is mended); then what is wrong with it is returned."""
        where = (api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
        q = sa.select(api_keys).where(*where)
        async with self._write() as conn:
            record, bad = await one(conn, q, api_keys, rows.key)
            if record is None and bad is None:
                raise NotFound("api key", key_id, tenant_id)
            # revoked_at asked in SQL only when the row cannot be read: it may be what cannot be decoded
            if not (record.revoked_at is None if record is not None else await is_live(conn, api_keys, where)):
                return either(record, bad)
            now = utcnow()
            await conn.execute(sa.update(api_keys).where(*where).values(revoked_at=now))
            names = (await conn.execute(sa.select(api_keys.c.name, api_keys.c.prefix).where(*where))).one()
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="key.revoke",
                object_type="api_key",
                object_id=key_id,
                detail={"name": names.name, "prefix": names.prefix},
                at=now,
            )
            record, bad = await one(conn, q, api_keys, rows.key)
        return either(record, bad)


def _expiry(expires_at: datetime | None) -> datetime | None:
    expires_at = to_utc(expires_at, "expires_at")
    if expires_at is None:
        return None
    now = utcnow()
    if expires_at <= now:
        raise Invalid("expires_at is in the past: give a time in the future", field="expires_at")
    if expires_at > now + timedelta(days=KEY_MAX_LIFETIME_DAYS):
        raise Invalid(
            f"expires_at is more than {KEY_MAX_LIFETIME_DAYS} days (100 years) away; leave it out for a "
            "key that does not expire",
            field="expires_at",
        )
    return expires_at


class _Row:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
