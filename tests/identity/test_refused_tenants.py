"""The Authenticator refuses the callers of a tenant whose stored rows cannot be read (storage's
StorageService.refused, storage/rows.py), by name, and an org-wide unreadable token revocation
refuses every OIDC token but no API key."""

from __future__ import annotations

import asyncio
import datetime as dt

from multihome.identity.authenticator import Authenticator
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal
from multihome.storage.keys import KeyIndex, hash_key
from multihome.storage.records import KeyRecord

KEYS = {"ten_a": "mh_aaaaaaaa_" + "a" * 40, "ten_b": "mh_bbbbbbbb_" + "b" * 40}
TOKEN = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


class Refusals:
    def __init__(self, refused: dict) -> None:
        self.refused = refused


class Verifier:
    """Stands in for OidcVerifier: every token is verified for `tenant`."""

    def __init__(self) -> None:
        self.tenant = "ten_a"

    async def verify(self, token) -> Principal:
        return Principal(tenant=self.tenant, subject="someone", source="oidc")


def record(tenant: str, secret: str) -> KeyRecord:
    return KeyRecord(
        id=f"key_{tenant}",
        tenant_id=tenant,
        team_id=None,
        name="k",
        prefix=secret[3:11],
        hash=hash_key(secret),
        roles=("member",),
        scopes_models=None,
        scopes_endpoints=None,
        metadata={},
        expires_at=None,
        revoked_at=None,
        created_at=dt.datetime.now(dt.UTC),
    )


def world(refused: dict) -> tuple[Authenticator, Verifier]:
    index = KeyIndex({s[3:11]: record(t, s) for t, s in KEYS.items()})
    oidc = Verifier()
    return Authenticator({}, managed=index.lookup, oidc=oidc, refusals=Refusals(refused)), oidc


def who(auth: Authenticator, credential: bytes) -> str:
    scope = {"headers": [(b"authorization", b"Bearer " + credential)]}
    try:
        return asyncio.run(auth.authenticate(scope)).tenant
    except ApiError as err:
        assert err.status == 403, err
        return err.body.code or ""


def test_a_refused_tenants_keys_and_tokens_are_refused_by_name_and_no_other_tenants():
    auth, oidc = world({"ten_a": "tenants ten_a: Expected `object`, got `null` - at `$.metadata`"})
    assert who(auth, KEYS["ten_a"].encode()) == "tenant_unavailable"
    assert who(auth, KEYS["ten_b"].encode()) == "ten_b"
    assert who(auth, TOKEN) == "tenant_unavailable"
    oidc.tenant = "ten_b"
    assert who(auth, TOKEN) == "ten_b"


def test_an_unreadable_org_wide_token_revocation_refuses_every_token_and_no_key():
    auth, oidc = world({None: "token_revocations rev_1: a stored value cannot be decoded (ValueError)"})
    for tenant in ("ten_a", "ten_b"):
        oidc.tenant = tenant
        assert who(auth, TOKEN) == "tenant_unavailable"
        assert who(auth, KEYS[tenant].encode()) == tenant  # revocations do not apply to API keys


def test_nothing_refused_serves_everyone():
    auth, oidc = world({})
    assert who(auth, KEYS["ten_a"].encode()) == "ten_a"
    assert who(auth, TOKEN) == "ten_a"
