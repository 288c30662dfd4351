"""Token verification against a real local issuer: what a caller with a good or bad token sees."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from multihome.identity.oidc import looks_like_jwt
from multihome.schema.principal import MEMBER, TENANT_ADMIN, Principal
from oidc_issuer import LocalIssuer

from .helpers import b64, forge, refused, verify_all, verify_one

CLAIMS = {"tenant": "tid", "team": "team", "roles": "roles", "role_map": {"GatewayAdmins": TENANT_ADMIN}}


@pytest.fixture
def idp():
    with LocalIssuer() as issuer:
        yield issuer


def cfg(idp, **kw):
    return idp.config(claims=CLAIMS, **kw)


def no_token_text(err, token: str) -> None:
    """A refusal must not echo the token or any of its parts."""
    text = err.body.message + " ".join(err.headers.values())
    for part in token.split("."):
        if len(part) >= 8:
            assert part[:8] not in text and part[-8:] not in text
    assert "user-1" not in text and "acme" not in text


def test_valid_token_becomes_a_principal_with_mapped_claims(idp):
    token = idp.mint(tid="acme", team="search", roles=["GatewayAdmins", "Unrelated"])
    p = verify_one(cfg(idp), token)
    assert p == Principal(
        tenant="acme", subject="user-1", source="oidc:local", team="search", roles=frozenset({MEMBER, TENANT_ADMIN})
    )
    assert p.key_id is None


def test_expired_token_is_refused_without_echoing_it(idp):
    token = idp.mint(tid="acme", exp_in=-120, iat=int(time.time()) - 600)
    err = refused(verify_one(cfg(idp), token), 401, "token_expired")
    assert "expired" in err.body.message
    assert err.headers["www-authenticate"].startswith("Bearer")
    no_token_text(err, token)


def test_token_not_yet_valid_is_refused(idp):
    token = idp.mint(tid="acme", nbf=int(time.time()) + 300)
    err = refused(verify_one(cfg(idp), token), 401, "token_not_yet_valid")
    assert "clock" in err.body.message
    future_iat = idp.mint(tid="acme", iat=int(time.time()) + 300, exp_in=900)
    refused(verify_one(cfg(idp), future_iat), 401, "token_not_yet_valid")


def test_clock_skew_within_leeway_passes_and_beyond_it_fails(idp):
    now = int(time.time())
    skewed = [idp.mint(tid="acme", exp=now - 10), idp.mint(tid="acme", nbf=now + 10)]
    assert all(isinstance(r, Principal) for r in verify_all([cfg(idp, leeway_s=30)], skewed))
    strict = verify_all([cfg(idp, leeway_s=0)], skewed)
    refused(strict[0], 401, "token_expired")
    refused(strict[1], 401, "token_not_yet_valid")


def test_wrong_audience_is_refused_and_any_listed_audience_is_accepted(idp):
    err = refused(verify_one(cfg(idp), idp.mint(tid="acme", aud="api://someone-else")), 401, "invalid_audience")
    assert "api://multihome" in err.body.message
    several = cfg(idp, audiences=["api://other", "api://multihome"])
    assert isinstance(verify_one(several, idp.mint(tid="acme", aud=["x", "api://multihome"])), Principal)
    refused(verify_one(cfg(idp), idp.mint(tid="acme", aud=None)), 401, "missing_claim")


def test_token_from_another_issuer_claiming_a_trusted_iss_fails_its_signature(idp):
    with LocalIssuer() as impostor:
        # Same iss, same kid as the trusted issuer, but signed with the impostor's key.
        impostor.keys[idp.default_kid] = impostor.keys.pop(impostor.default_kid)
        impostor.keys[idp.default_kid].kid = idp.default_kid
        impostor.default_kid = idp.default_kid
        token = impostor.mint(iss=idp.issuer, tid="acme")
    refused(verify_one(cfg(idp), token), 401, "invalid_signature")


def test_unknown_issuer_is_refused_without_fetching_anything(idp):
    with LocalIssuer() as other:
        token = other.mint(tid="acme")
        refused(verify_one(cfg(idp), token), 401, "unknown_issuer")
        assert other.jwks_fetches == 0 and other.discovery_fetches == 0
    # `iss` is matched exactly: a trailing slash is another issuer.
    refused(verify_one(cfg(idp), idp.mint(tid="acme", iss=idp.issuer + "/")), 401, "unknown_issuer")
    refused(verify_one(cfg(idp), idp.mint(tid="acme", iss=None)), 401, "unknown_issuer")


def test_unsigned_alg_none_token_is_refused(idp):
    claims = idp.claims(tid="acme")
    for alg in ("none", "None", "NONE"):
        token = forge({"alg": alg, "typ": "JWT", "kid": idp.default_kid}, claims)
        assert looks_like_jwt(token)
        refused(verify_one(cfg(idp), token), 401, "algorithm_not_allowed")
    assert idp.jwks_fetches == 0  # refused before any key is needed


def test_hs256_signed_with_the_public_key_as_secret_is_refused(idp):
    # The classic RS/HS confusion: an attacker HMACs with the (public) RSA key as the secret.
    pem = idp.public_pem()
    claims = idp.claims(tid="acme", roles=["GatewayAdmins"])
    token = forge({"alg": "HS256", "typ": "JWT", "kid": idp.default_kid}, claims, hmac_secret=pem)
    err = refused(verify_one(cfg(idp), token), 401, "algorithm_not_allowed")
    assert "RS256" in err.body.message


def test_token_header_algorithm_must_fit_the_key_it_names(idp):
    # Issuer allows RS256 and ES256; a token that says ES256 but names the RSA kid is refused.
    es_kid = idp.add_key("ES256")
    both = cfg(idp, algorithms=["RS256", "ES256"])
    es_token = idp.mint(kid=es_kid, tid="acme")
    assert isinstance(verify_one(both, es_token), Principal)
    h, p, s = es_token.split(".")
    header = json.loads(jwt.utils.base64url_decode(h))
    header["kid"] = idp.default_kid
    swapped = b64(json.dumps(header).encode()) + "." + p + "." + s
    refused(verify_one(both, swapped), 401, "algorithm_not_allowed")


def test_tampered_payload_is_refused(idp):
    token = idp.mint(tid="acme", roles=[])
    h, _, s = token.split(".")
    elevated = idp.claims(tid="acme", roles=["GatewayAdmins"])
    tampered = h + "." + b64(json.dumps(elevated).encode()) + "." + s
    err = refused(verify_one(cfg(idp), tampered), 401, "invalid_signature")
    no_token_text(err, tampered)


def test_tampered_signature_is_refused(idp):
    token = idp.mint(tid="acme")
    h, p, s = token.split(".")
    sig = bytearray(jwt.utils.base64url_decode(s))
    sig[len(sig) // 2] ^= 0x01
    refused(verify_one(cfg(idp), f"{h}.{p}.{b64(bytes(sig))}"), 401, "invalid_signature")
    refused(verify_one(cfg(idp), f"{h}.{p}."), 401, "invalid_signature")


def test_token_without_kid_works_with_one_key_and_is_refused_with_several(idp):
    token = idp.mint(tid="acme", with_kid=False)
    assert isinstance(verify_one(cfg(idp), token), Principal)
    idp.add_key("RS256")
    err = refused(verify_one(cfg(idp), token), 401, "missing_kid")
    assert "several keys" in err.body.message


def test_malformed_tokens_are_refused_clearly(idp):
    c = cfg(idp)
    for junk in (
        "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",
        "a.b.c",
        "eyJ.eyJ.",
        "x" * 20000,
        "eyJhbGciOiJSUzI1NiJ9.W10.c2ln",
    ):
        refused(verify_one(c, junk), 401, "malformed_token")
    refused(verify_one(c, idp.mint(tid="acme", exp="tomorrow")), 401, "malformed_token")
    refused(verify_one(c, idp.mint(tid="acme", iat=None)), 401, "missing_claim")


def test_looks_like_jwt_separates_tokens_from_api_keys(idp):
    assert looks_like_jwt(idp.mint(tid="acme"))
    assert looks_like_jwt(idp.mint(tid="acme").encode())
    for key in ("sk-live-abc123", "mh_key_abc.def", "", "a.b.c", "eyJ.eyJ", "Bearer eyJ.x.y"):
        assert not looks_like_jwt(key)


def test_two_issuers_at_once_each_with_its_own_keys_and_mapping(idp):
    with LocalIssuer(alg="ES256", path="/okta") as okta:
        a = cfg(idp)
        b = okta.config(
            name="okta", claims={"tenant_value": "retail", "roles": "groups", "role_map": {"ai-admins": TENANT_ADMIN}}
        )
        ta = idp.mint(tid="acme")
        tb = okta.mint(groups=["ai-admins"])
        cross = okta.mint(iss=idp.issuer, tid="acme")  # okta's ES256 key claiming the RS256 issuer
        pa, pb, pc = verify_all([a, b], [ta, tb, cross])
        assert (pa.source, pa.tenant, pa.roles) == ("oidc:local", "acme", frozenset({MEMBER}))
        assert (pb.source, pb.tenant, pb.roles) == ("oidc:okta", "retail", frozenset({MEMBER, TENANT_ADMIN}))
        refused(pc, 401, "algorithm_not_allowed")
        assert idp.jwks_fetches == 1 and okta.jwks_fetches == 1


@pytest.mark.parametrize(
    "claim, raw",
    [
        ("exp", "1" + "0" * 400),  # an integer no float holds: was an OverflowError (a 500) after verification
        ("iat", "-1" + "0" * 400),
        ("exp", '"{exp}"'),  # a number in a string: PyJWT's int() took it
        ("iat", "true"),  # a boolean: int(True) is 1
        ("exp", "true"),
        ("nbf", '"0"'),
        ("exp", "253402300800"),  # past 9999-12-31T23:59:59Z: no date an issuer means
    ],
)
def test_exp_nbf_iat_must_be_json_numbers_of_a_date_or_the_token_is_malformed(idp, claim, raw):
    claims = idp.claims(tid="acme")
    claims[claim] = "@@"
    payload = json.dumps(claims).replace('"@@"', raw.replace("{exp}", str(int(time.time()) + 300)))
    token = idp.sign_raw(payload.encode())
    err = refused(verify_one(cfg(idp), token), 401, "malformed_token")
    assert "exp, nbf, iat must be numbers" in err.body.message
    no_token_text(err, token)


def test_a_token_signed_over_raw_json_verifies_like_a_minted_one(idp):
    # The test above proves its refusals with `sign_raw`; the same bytes with ordinary dates pass.
    payload = json.dumps(idp.claims(tid="acme", exp_in=300.5)).encode()
    assert isinstance(verify_one(cfg(idp), idp.sign_raw(payload)), Principal)


def test_an_rsa_key_shorter_than_2048_bits_is_not_trusted(idp):
    """docs/oidc.md: RSA keys shorter than 2048 bits are refused. An issuer that publishes one beside its
    good key: a token it signs is refused, saying why."""
    short = idp.add_key("RS256", kid="rsa-1024", key_size=1024)
    with pytest.warns(jwt.warnings.InsecureKeyLengthWarning):  # PyJWT's, as the test issuer signs
        token = idp.mint(tid="acme", kid=short)
    err = refused(verify_one(cfg(idp), token), 401, "invalid_signature")
    assert "too weak" in err.body.message
    no_token_text(err, token)
    assert isinstance(verify_one(cfg(idp), idp.mint(tid="acme")), Principal)


def test_only_the_first_100_keys_of_a_jwks_are_read(idp):
    """docs/oidc.md: only the first 100 keys are read (a JWKS of a million keys costs no more)."""
    kids = [idp.add_key("ES256") for _ in range(100)]  # with the default RS256 key first: 101 keys
    config = cfg(idp, algorithms=["RS256", "ES256"])
    last, hundredth = idp.mint(tid="acme", kid=kids[-1]), idp.mint(tid="acme", kid=kids[-2])
    results = verify_all([config], [hundredth, last])
    assert isinstance(results[0], Principal)
    refused(results[1], 401, "unknown_key")
