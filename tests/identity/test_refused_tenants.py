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
    def __init__(self, refused: dict, tokens_refused: frozenset = frozenset()) -> None:
        self.refused, self.tokens_refused = refused, tokens_refused


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


def world(refused: dict, tokens_refused: frozenset = frozenset()) -> tuple[Authenticator, Verifier]:
    index = KeyIndex({s[3:11]: record(t, s) for t, s in KEYS.items()})
    oidc = Verifier()
    return Authenticator({}, managed=index.lookup, oidc=oidc, refusals=Refusals(refused, tokens_refused)), oidc


def who(auth: Authenticator, credential: bytes, *, admin: bool = False) -> str:
    """The caller's tenant, or the refusal's code; `admin`: as the admin API and the console identify."""
    scope = {"headers": [(b"authorization", b"Bearer " + credential)]}
    try:
        return asyncio.run(auth.admin(scope) if admin else auth.authenticate(scope)).tenant
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


def test_the_admin_api_lets_a_refused_tenants_keys_and_tokens_in_unless_a_revocation_may_hold_the_token():
    """The admin API narrows what a refused tenant's admins may do (api/admin/refusals.py); only an unreadable
    token revocation (of the tenant, or org-wide) restricts who the caller is, and only for tokens."""
    why = {"ten_a": "budgets bud_1: amount is not a decimal number"}
    auth, oidc = world(why)
    assert who(auth, KEYS["ten_a"].encode(), admin=True) == "ten_a"
    assert who(auth, TOKEN, admin=True) == "ten_a"
    assert who(auth, TOKEN) == "tenant_unavailable"  # model calls: refused as before

    revocation = {"ten_a": "token_revocations rev_1: a stored value cannot be decoded (ValueError)"}
    auth, oidc = world(revocation, frozenset({"ten_a"}))
    assert who(auth, TOKEN, admin=True) == "tenant_unavailable"
    assert who(auth, KEYS["ten_a"].encode(), admin=True) == "ten_a"  # revocations do not apply to API keys
    oidc.tenant = "ten_b"
    assert who(auth, TOKEN, admin=True) == "ten_b"

    org_wide = {None: "token_revocations rev_2: a stored value cannot be decoded (ValueError)", **why}
    auth, oidc = world(org_wide, frozenset({None}))
    for tenant in ("ten_a", "ten_b"):
        oidc.tenant = tenant
        assert who(auth, TOKEN, admin=True) == "tenant_unavailable"
        assert who(auth, KEYS[tenant].encode(), admin=True) == tenant
