"""A genuine token acts only for a tenant that exists (issue 11 #6): the verifier checks the token's
tenant against the stored tenants on every request, remembered tokens included, re-reads them once
before refusing (a tenant created on another replica), and never accepts the reserved tenant "*"."""

from __future__ import annotations

import asyncio

import pytest

from multihome.identity.oidc import OidcVerifier
from multihome.schema.principal import Principal
from oidc_issuer import LocalIssuer

from .helpers import outcome, refused, verify_one

CLAIMS = {"tenant": "tid"}


@pytest.fixture
def idp():
    with LocalIssuer() as issuer:
        yield issuer


class Tenants:
    """Stands in for the storage snapshot: the known tenant ids, and what a re-read would find."""

    def __init__(self, known=(), stored=()) -> None:
        self.known, self.stored, self.rereads = set(known), set(stored), 0

    def __call__(self):
        return self.known

    async def miss(self) -> bool:
        self.rereads += 1
        self.known = set(self.stored)
        return True


def test_unknown_deleted_and_new_tenants(idp):
    tenants = Tenants(known={"ten_a"}, stored={"ten_a", "ten_new"})

    async def scenario():
        v = OidcVerifier([idp.config(claims=CLAIMS)], tenants=tenants, tenants_miss=tenants.miss)
        try:
            token = idp.mint(tid="ten_a")
            assert (await v.verify(token)).tenant == "ten_a" and tenants.rereads == 0
            # Made up: refused after one re-read, with a message that does not echo the claim.
            err = refused(await outcome(v, idp.mint(tid="ten_madeup")), 403, "unknown_tenant")
            assert "unknown or has been offboarded" in err.body.message and "ten_madeup" not in err.body.message
            assert tenants.rereads == 1
            # Created on another replica: found by the re-read, accepted.
            assert (await v.verify(idp.mint(tid="ten_new"))).tenant == "ten_new"
            # Offboarded: the remembered token is refused too.
            tenants.known = tenants.stored = {"ten_new"}
            refused(await outcome(v, token), 403, "unknown_tenant")
        finally:
            await v.close()

    asyncio.run(scenario())


def test_a_token_never_acts_for_every_tenant(idp):
    err = refused(verify_one(idp.config(claims=CLAIMS), idp.mint(tid="*")), 403, "unknown_tenant")
    assert "'tid'" in err.body.message
    for claims in ({"tenant_value": "*"}, {"tenant": "tid", "tenant_map": {"x": "*"}}):
        with pytest.raises(Exception, match="not a tenant"):
            idp.config(claims=claims)


def test_without_storage_tenants_are_not_checked(idp):
    assert isinstance(verify_one(idp.config(claims=CLAIMS), idp.mint(tid="acme")), Principal)
