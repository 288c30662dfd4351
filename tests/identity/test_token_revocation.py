"""Token revocation on the OIDC path: the in-memory index's rules, and the verifier refusing revoked
tokens from a real local issuer — first seen or already remembered — with a 401 that never echoes
the token, while other tokens of the same subject keep working."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from multihome.identity.oidc import OidcVerifier
from multihome.schema.principal import Principal
from multihome.storage import RevocationIndex, TokenRevocation
from oidc_issuer import LocalIssuer

from .helpers import outcome, refused

ISS = "https://idp.example.com"
NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
T = NOW.timestamp()


def rev(kind, *, id="rev_1", tenant=None, issuer=ISS, subject=None, jti=None, not_before=None, expires_at=None):
    return TokenRevocation(
        id=id,
        tenant_id=tenant,
        kind=kind,
        issuer=issuer,
        subject=subject,
        jti=jti,
        not_before=not_before,
        expires_at=expires_at,
        reason="",
        actor="sec",
        created_at=NOW,
    )


def test_jti_revocation_refuses_that_token_only_until_it_expires():
    r = rev("jti", jti="j1", expires_at=NOW + timedelta(hours=1))
    index = RevocationIndex([r])
    assert len(index) == 1 and bool(index)
    assert index.match(ISS, "j1", "alice", T - 10, "acme", T) == r
    assert index.match(ISS, "j2", "alice", T - 10, "acme", T) is None  # another token of the same subject
    assert index.match(ISS, None, "alice", T - 10, "acme", T) is None  # a token without jti
    assert index.match(ISS + "/", "j1", "alice", T - 10, "acme", T) is None  # iss is compared exactly
    assert index.match(ISS, "j1", "alice", T - 10, "acme", T + 3599) == r
    assert index.match(ISS, "j1", "alice", T - 10, "acme", T + 3600) is None  # the row's time is over


def test_subject_revocation_refuses_tokens_issued_at_or_before_the_cut_off():
    r = rev("subject", subject="alice", not_before=NOW)
    index = RevocationIndex([r])
    assert index.match(ISS, "any", "alice", T - 3600, "acme", T) == r
    assert index.match(ISS, "any", "alice", T, "acme", T) == r  # iat == cut-off: refused
    assert index.match(ISS, "any", "alice", T + 1, "acme", T + 5) is None  # issued after: accepted
    assert index.match(ISS, "any", "bob", T - 3600, "acme", T) is None
    # No iat: there is no telling when it was issued, so it is refused (fail closed).
    assert index.match(ISS, None, "alice", None, "acme", T) == r
    ended = RevocationIndex([rev("subject", subject="alice", not_before=NOW, expires_at=NOW + timedelta(days=1))])
    assert ended.match(ISS, None, "alice", T - 1, "acme", T + 86399) is not None
    assert ended.match(ISS, None, "alice", T - 1, "acme", T + 86400) is None


def test_a_tenant_scoped_revocation_applies_only_to_tokens_of_that_tenant():
    scoped = rev("subject", id="rev_a", tenant="acme", subject="carol", not_before=NOW)
    jti_scoped = rev("jti", id="rev_j", tenant="acme", jti="j9")
    index = RevocationIndex([scoped, jti_scoped])
    assert index.match(ISS, None, "carol", T - 1, "acme", T) == scoped
    assert index.match(ISS, None, "carol", T - 1, "globex", T) is None
    assert index.match(ISS, "j9", "x", T - 1, "acme", T) == jti_scoped
    assert index.match(ISS, "j9", "x", T - 1, "globex", T) is None
    org = rev("subject", id="rev_org", subject="carol", not_before=NOW)  # no tenant: every tenant
    both = RevocationIndex([scoped, org])
    assert both.match(ISS, None, "carol", T - 1, "globex", T) == org


def test_an_empty_index_is_falsy_so_the_hot_path_skips_it():
    assert not RevocationIndex() and len(RevocationIndex()) == 0


# -- the verifier, against a real issuer --------------------------------------------------------

CLAIMS = {"tenant": "tid"}


@pytest.fixture
def idp():
    with LocalIssuer() as issuer:
        yield issuer


class Revocations:
    """Stands in for SnapshotCache.revocations: swap the index as a snapshot reload would."""

    def __init__(self) -> None:
        self.index = RevocationIndex()
        self.reads = 0

    def __call__(self) -> RevocationIndex:
        self.reads += 1
        return self.index


def test_verifier_refuses_a_revoked_token_even_when_it_was_already_verified(idp):
    revocations = Revocations()
    t1 = idp.mint(tid="acme", sub="alice", jti="jti-1")
    t2 = idp.mint(tid="acme", sub="alice", jti="jti-2")

    async def scenario():
        v = OidcVerifier([idp.config(claims=CLAIMS)], revocations=revocations)
        try:
            assert isinstance(await outcome(v, t1), Principal)
            assert isinstance(await outcome(v, t1), Principal)  # now answered from the verified cache
            assert t1 in v._verified and revocations.reads == 2
            revocations.index = RevocationIndex([rev("jti", id="rev_abc", issuer=idp.issuer, jti="jti-1")])
            err = refused(await outcome(v, t1), 401, "token_revoked")
            assert "revoked" in err.body.message and "rev_abc" in err.body.message
            assert err.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            for part in t1.split("."):
                assert part[:12] not in err.body.message
            assert "alice" not in err.body.message and "jti-1" not in err.body.message
            assert (await outcome(v, t2)).subject == "alice"  # the same subject's other token
            revocations.index = RevocationIndex()  # the revocation is deleted
            assert isinstance(await outcome(v, t1), Principal)
        finally:
            await v.close()

    asyncio.run(scenario())


def test_verifier_applies_subject_cut_off_and_tenant_scope_on_first_sight(idp):
    now = int(time.time())
    old = idp.mint(tid="acme", sub="bob", iat=now - 60)
    new = idp.mint(tid="acme", sub="bob", iat=now + 1)  # issued after the cut-off (within the leeway)
    other_tenant = idp.mint(tid="globex", sub="bob", iat=now - 60)
    other_subject = idp.mint(tid="acme", sub="carol", iat=now - 60)
    cut = datetime.fromtimestamp(now, UTC)
    revocations = Revocations()
    revocations.index = RevocationIndex(
        [rev("subject", issuer=idp.issuer, tenant="acme", subject="bob", not_before=cut)]
    )

    async def scenario():
        v = OidcVerifier([idp.config(claims=CLAIMS)], revocations=revocations)
        try:
            refused(await outcome(v, old), 401, "token_revoked")
            assert (await outcome(v, new)).subject == "bob"
            assert (await outcome(v, other_tenant)).tenant == "globex"
            assert (await outcome(v, other_subject)).subject == "carol"
        finally:
            await v.close()

    asyncio.run(scenario())


def test_subject_means_the_issuers_subject_claim(idp):
    """With claims.subject: oid (Entra), a subject revocation names the oid, as whoami and audit show it."""
    token = idp.mint(tid="acme", sub="pairwise-sub", oid="oid-42", iat=int(time.time()) - 5)
    revocations = Revocations()
    revocations.index = RevocationIndex(
        [rev("subject", issuer=idp.issuer, subject="oid-42", not_before=datetime.now(UTC))]
    )

    async def scenario():
        v = OidcVerifier([idp.config(claims={"tenant": "tid", "subject": "oid"})], revocations=revocations)
        try:
            refused(await outcome(v, token), 401, "token_revoked")
        finally:
            await v.close()

    asyncio.run(scenario())


def test_without_a_revocation_source_nothing_is_checked(idp):
    async def scenario():
        v = OidcVerifier([idp.config(claims=CLAIMS)])
        try:
            assert v.revocations is None
            assert isinstance(await outcome(v, idp.mint(tid="acme")), Principal)
        finally:
            await v.close()

    asyncio.run(scenario())


def test_max_token_lifetime_is_validated():
    with LocalIssuer() as idp:
        assert idp.config(claims=CLAIMS).max_token_lifetime_s == 86400
        assert idp.config(claims=CLAIMS, max_token_lifetime_s=3600).max_token_lifetime_s == 3600
        with pytest.raises(Exception, match="max_token_lifetime_s"):
            idp.config(claims=CLAIMS, max_token_lifetime_s=5)


def test_work_queued_by_a_token_stops_once_its_issuer_is_trusted_no_more():
    """An identity provider taken out of identity.oidc (compromised, replaced) and the gateway restarted: the
    background work its tokens queued is refused like its tokens, not run on (the stored caller's check)."""
    from types import SimpleNamespace

    from multihome.identity.stored_caller import stored_caller
    from multihome.schema.errors import ApiError

    async def known(tenant):
        return True

    refusals = SimpleNamespace(refused={}, tokens_refused=frozenset())

    async def scenario(idp, other):
        token = idp.mint(tid="acme")
        before = OidcVerifier([idp.config(claims={"tenant": "tid"})], revocations=lambda: None)
        principal = await before.verify(token)
        facts = before.facts(token)
        await before.close()
        await stored_caller(known, refusals, None, before.check_stored)(principal, facts)  # trusted: runs
        # The restart trusts another issuer only.
        after = OidcVerifier([other.config(claims={"tenant": "tid"})], revocations=lambda: None)
        outcomes = []
        for check in (after.check_stored, None):  # None: no issuer trusted at all
            try:
                await stored_caller(known, refusals, None, check)(principal, facts)
            except ApiError as err:
                outcomes.append((err.status, err.body.code))
        await after.close()
        return outcomes

    with LocalIssuer() as idp, LocalIssuer(path="/other") as other:
        assert asyncio.run(scenario(idp, other)) == [(401, "unknown_issuer")] * 2
