"""Claims -> Principal mapping, required claims, and the config rules for issuers."""

from __future__ import annotations

import msgspec
import pytest

from multihome.config.oidc import IssuerConfig
from multihome.identity.oidc import OidcVerifier
from multihome.schema.principal import AUDITOR, MEMBER, ORG_ADMIN, TENANT_ADMIN, Principal
from oidc_issuer import LocalIssuer

from .helpers import refused, verify_all, verify_one


@pytest.fixture(scope="module")
def idp():
    with LocalIssuer() as issuer:
        yield issuer


def test_roles_from_a_list_a_space_separated_string_and_a_nested_claim(idp):
    claims = {
        "tenant": "tid",
        "roles": ["roles", "scp", "realm_access.roles"],
        "role_map": {"Gateway.Admin": TENANT_ADMIN, "audit.read": AUDITOR, "platform-owners": ORG_ADMIN},
    }
    c = idp.config(claims=claims)
    listed, spaced, nested, unmapped = verify_all(
        [c],
        [
            idp.mint(tid="acme", roles=["Gateway.Admin", "Something.Else"]),
            idp.mint(tid="acme", scp="openid audit.read profile"),
            idp.mint(tid="acme", realm_access={"roles": ["platform-owners", "offline_access"]}),
            idp.mint(tid="acme", roles=["tenant-admin", "org-admin"]),  # raw role names are not trusted
        ],
    )
    assert listed.roles == {MEMBER, TENANT_ADMIN}
    assert spaced.roles == {MEMBER, AUDITOR}
    assert nested.roles == {MEMBER, ORG_ADMIN} and nested.has_role(TENANT_ADMIN)
    assert unmapped.roles == {MEMBER}


def test_default_roles_and_a_token_that_grants_nothing(idp):
    strict = idp.config(
        claims={"tenant": "tid", "roles": "roles", "role_map": {"ai-users": MEMBER}, "default_roles": []}
    )
    ok, nothing = verify_all(
        [strict], [idp.mint(tid="acme", roles=["ai-users"]), idp.mint(tid="acme", roles=["other"])]
    )
    assert ok.roles == {MEMBER}
    err = refused(nothing, 403, "no_role")
    assert "role_map" in err.body.message


def test_a_token_mapped_to_auditor_alone_is_read_only(idp):
    """A token whose role_map gives only `auditor` (no default member) is a read-only caller, which calls no
    model (docs/api.md "Roles"); with the default roles it is a member too and calls models."""
    audit = {"tenant": "tid", "roles": "roles", "role_map": {"audit.read": AUDITOR}}
    token = idp.mint(tid="acme", roles=["audit.read"])
    (alone,) = verify_all([idp.config(claims={**audit, "default_roles": []})], [token])
    (with_default,) = verify_all([idp.config(claims=audit)], [token])
    assert (alone.roles, alone.read_only) == ({AUDITOR}, True)
    assert (with_default.roles, with_default.read_only) == ({AUDITOR, MEMBER}, False)


def test_tenant_from_claim_fixed_value_or_map_and_missing_tenant_is_403(idp):
    by_claim = idp.config(claims={"tenant": "org.tenant"})
    assert verify_one(by_claim, idp.mint(org={"tenant": "acme"})).tenant == "acme"
    err = refused(verify_one(by_claim, idp.mint()), 403, "no_tenant")
    assert "'org.tenant'" in err.body.message
    refused(verify_one(by_claim, idp.mint(org={"tenant": ["a", "b"]})), 403, "no_tenant")

    fixed = idp.config(claims={"tenant_value": "retail"})
    assert verify_one(fixed, idp.mint()).tenant == "retail"

    mapped = idp.config(claims={"tenant": "tid", "tenant_map": {"72f988bf-86f1": "acme"}})
    assert verify_one(mapped, idp.mint(tid="72f988bf-86f1")).tenant == "acme"
    err = refused(verify_one(mapped, idp.mint(tid="00000000-0000")), 403, "unknown_tenant")
    assert "00000000" not in err.body.message


def test_subject_and_team_claims(idp):
    c = idp.config(claims={"tenant": "tid", "team": "groups", "subject": "oid"})
    p = verify_one(c, idp.mint(tid="acme", oid="obj-9", groups=["search"]))
    assert (p.subject, p.team) == ("obj-9", "search")
    assert verify_one(c, idp.mint(tid="acme", oid="obj-9")).team is None
    refused(verify_one(c, idp.mint(tid="acme", oid="obj-9", groups=["a", "b"])), 403, "invalid_team")
    refused(verify_one(c, idp.mint(tid="acme")), 401, "missing_claim")  # no oid


def test_required_claims(idp):
    c = idp.config(
        claims={"tenant": "tid"},
        required_claims={"tid": "acme", "groups": "ai-users", "scp": "access_as_user", "email_verified": True},
    )
    good = dict(tid="acme", groups=["x", "ai-users"], scp="openid access_as_user", email_verified=True)
    assert isinstance(verify_one(c, idp.mint(**good)), Principal)
    for bad in (
        {**good, "tid": "other"},
        {**good, "groups": ["x"]},
        {**good, "scp": "openid"},
        {**good, "email_verified": False},
        {k: v for k, v in good.items() if k != "groups"},
    ):
        err = refused(verify_one(c, idp.mint(**bad)), 403, "claim_mismatch")
        assert "other" not in err.body.message
    # A list value requires every listed entry.
    both = idp.config(claims={"tenant": "tid"}, required_claims={"groups": ["a", "b"]})
    assert isinstance(verify_one(both, idp.mint(tid="acme", groups=["b", "c", "a"])), Principal)
    refused(verify_one(both, idp.mint(tid="acme", groups=["a"])), 403, "claim_mismatch")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"algorithms": ["none"]}, "'none'"),
        ({"algorithms": ["RS256", "HS256"]}, "shared-secret"),
        ({"algorithms": ["RS1"]}, "unknown algorithm"),
        ({"algorithms": []}, "at least one"),
        ({"audiences": []}, "audiences"),
        ({"issuer": "http://idp.example.com"}, "issuer: must be an https"),
        ({"jwks_uri": "ftp://idp.example.com/keys"}, "jwks_uri"),
        ({"claims": {"tenant": "tid", "tenant_value": "x"}}, "exactly one"),
        ({"claims": {}}, "exactly one"),
        ({"claims": {"tenant": "tid", "roles": "r", "role_map": {"x": "superuser"}}}, "not a role"),
        ({"claims": {"tenant": "tid", "default_roles": ["root"]}}, "not a role"),
        ({"claims": {"tenant": "tid", "role_map": {"x": "member"}}}, "also set `roles`"),
        ({"leeway_s": 3600}, "leeway_s"),
        ({"surprise": 1}, "unknown field"),
    ],
)
def test_config_rules(change, message):
    base = {"name": "corp", "issuer": "https://login.example.com/t/v2.0", "audiences": ["api://multihome"]}
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert({**base, **change}, IssuerConfig)
    assert message in str(info.value)


def test_config_defaults_and_duplicates():
    c = msgspec.convert({"name": "corp", "issuer": "https://idp.example.com", "audiences": ["a"]}, IssuerConfig)
    assert (c.algorithms, c.leeway_s, c.refresh_s, c.min_refresh_interval_s) == (["RS256"], 30.0, 600.0, 30.0)
    assert (c.claims.subject, c.claims.tenant, c.claims.default_roles) == ("sub", "tenant", ["member"])
    # docs/oidc.md's table: the other defaults, and the bounds of the lifetime a revocation is kept.
    assert (c.fetch_timeout_s, c.max_token_lifetime_s, c.jwks_uri, c.required_claims) == (5.0, 86400.0, None, {})
    assert (c.claims.team, c.claims.roles, c.claims.role_map, c.claims.tenant_map) == (None, None, {}, {})
    base = {"name": "corp", "issuer": "https://idp.example.com", "audiences": ["a"]}
    for bound in (60, 366 * 86400):
        assert msgspec.convert({**base, "max_token_lifetime_s": bound}, IssuerConfig).max_token_lifetime_s == bound
    for beyond in (59, 366 * 86400 + 1):
        with pytest.raises(msgspec.ValidationError, match="max_token_lifetime_s"):
            msgspec.convert({**base, "max_token_lifetime_s": beyond}, IssuerConfig)
    assert msgspec.convert({**base, "leeway_s": 300}, IssuerConfig).leeway_s == 300
    other = msgspec.convert({"name": "corp", "issuer": "https://other.example.com", "audiences": ["a"]}, IssuerConfig)
    with pytest.raises(ValueError, match=r"identity.oidc\[1\].name"):
        OidcVerifier([c, other])
    with pytest.raises(ValueError, match=r"identity.oidc\[1\].issuer"):
        OidcVerifier([c, msgspec.structs.replace(c, name="b")])


@pytest.mark.parametrize(
    "claim, value",
    [
        ("sub", "user\x00one"),  # PostgreSQL cannot store a NUL: every usage batch with it would fail
        ("sub", "user\ud800"),  # a lone surrogate: not text at all
        ("sub", "u" * 513),
        ("tid", "acme\nforged log line"),
        ("team", "blue\x1b[2J"),
    ],
)
def test_a_subject_tenant_or_team_that_is_not_one_line_of_text_is_refused_without_echoing_it(idp, claim, value):
    config = idp.config(claims={"tenant": "tid", "team": "team"})
    fields = {"sub": "user-1", "tid": "acme", "team": "blue", claim: value}
    err = refused(verify_one(config, idp.mint(**fields)), 403, "invalid_claim")
    assert f"'{claim}' claim" in err.body.message and value not in err.body.message


@pytest.mark.parametrize("subject_claim", ["sub", "oid"])
@pytest.mark.parametrize("value", [5, ["user-1"], {"id": "user-1"}, True])
def test_a_subject_that_is_not_a_string_is_the_invalid_claim_refusal(idp, subject_claim, value):
    """The same 403 whichever claim names the subject, and whether PyJWT (`sub`) or the claim map reads it."""
    config = idp.config(claims={"tenant": "tid", "subject": subject_claim})
    err = refused(verify_one(config, idp.mint(tid="acme", **{subject_claim: value})), 403, "invalid_claim")
    assert f"'{subject_claim}' claim is not a string" in err.body.message


def test_a_jti_that_is_not_a_string_makes_the_token_malformed(idp):
    config = idp.config(claims={"tenant": "tid"})
    refused(verify_one(config, idp.mint(tid="acme", jti=7)), 401, "malformed_token")


def test_ordinary_subjects_tenants_and_teams_pass(idp):
    config = idp.config(claims={"tenant": "tid", "team": "team"})
    p = verify_one(config, idp.mint(sub="jöhn.doe@example.com", tid="acme", team="Équipe bleue"))
    assert (p.subject, p.tenant, p.team) == ("jöhn.doe@example.com", "acme", "Équipe bleue")


def test_a_top_level_claim_named_with_dots_is_found_before_a_nested_path(idp):
    """docs/oidc.md: claim names may be dotted paths into nested objects; a top-level claim with that exact
    name (Okta/Auth0 URL-named claims such as `https://example.com/roles`) is found first."""
    c = idp.config(
        claims={"tenant": "tid", "roles": "https://example.com/roles", "role_map": {"ai-admins": TENANT_ADMIN}}
    )
    url_named = verify_one(c, idp.mint(tid="acme", **{"https://example.com/roles": ["ai-admins"]}))
    assert url_named.roles == {MEMBER, TENANT_ADMIN}
    dotted = idp.config(claims={"tenant": "tid", "roles": "realm.roles", "role_map": {"x": AUDITOR}})
    top, nested = verify_all(
        [dotted],
        [
            idp.mint(tid="acme", **{"realm.roles": ["x"]}, realm={"roles": []}),
            idp.mint(tid="acme", realm={"roles": ["x"]}),
        ],
    )
    assert top.roles == {MEMBER, AUDITOR} and nested.roles == {MEMBER, AUDITOR}
    shadowed = verify_one(dotted, idp.mint(tid="acme", **{"realm.roles": []}, realm={"roles": ["x"]}))
    assert shadowed.roles == {MEMBER}  # the top-level claim wins, even when the nested one would grant more
