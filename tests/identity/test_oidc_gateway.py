"""End to end: the real `multihome serve` process trusting a local OIDC issuer, called with the openai SDK."""

from __future__ import annotations

import time

import openai
import pytest

from builders import api_keys, identity, simulated, single
from e2e.processes import Gateway, Simulator
from oidc_issuer import LocalIssuer


def _config(issuer: str, sim: str) -> dict:
    """The issuer without a jwks_uri: the gateway finds its keys through OIDC discovery."""
    corp = {
        "name": "corp",
        "issuer": issuer,
        "audiences": ["api://multihome"],
        "claims": {"tenant": "tid", "roles": "roles", "role_map": {"Gateway.Admin": "tenant-admin"}},
    }
    return single(
        simulated("openai", sim, key_env="MH_OIDC_TEST_UPSTREAM"),
        model="gpt-4o-oa",
        names=("openai", "oa", "gpt-4o"),
        group_fields={"retries": 0},
        server=api_keys("MH_OIDC_TEST_KEY"),
        identity=identity(None, corp),
    )


ENV = {"MH_OIDC_TEST_KEY": "mh-oidc-test-static-key", "MH_OIDC_TEST_UPSTREAM": "upstream-secret"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalIssuer() as idp:
        sim = Simulator("openai", "oidc-oa", env=ENV)
        try:
            gw = Gateway(_config(idp.issuer, sim.url), tmp_path_factory.mktemp("oidc"), ENV)
            try:
                yield idp, gw
            finally:
                gw.stop()
        finally:
            sim.stop()


def chat(gw, key: str):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)
    return client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_a_jwt_from_a_trusted_issuer_calls_a_model(stack):
    idp, gw = stack
    assert chat(gw, idp.mint(tid="acme", roles=["Gateway.Admin"])).choices[0].message.content
    assert idp.jwks_fetches == 1  # fetched at start-up, then served from memory
    assert chat(gw, idp.mint(tid="acme")).choices
    assert idp.jwks_fetches == 1


def test_bad_tokens_get_a_401_that_says_why_and_api_keys_still_work(stack):
    idp, gw = stack
    expired = idp.mint(tid="acme", exp=int(time.time()) - 120, iat=int(time.time()) - 600)
    with pytest.raises(openai.AuthenticationError) as info:
        chat(gw, expired)
    assert info.value.code == "token_expired" and "expired" in info.value.message
    assert expired.split(".")[1][:12] not in info.value.message
    with LocalIssuer() as stranger:
        with pytest.raises(openai.AuthenticationError) as info:
            chat(gw, stranger.mint(tid="acme"))
        assert info.value.code == "unknown_issuer"
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(gw, idp.mint())  # genuine, but no tenant claim
    assert info.value.code == "no_tenant"
    assert chat(gw, ENV["MH_OIDC_TEST_KEY"]).choices


def test_a_genuine_token_over_16_kib_is_a_malformed_token_not_an_api_key(stack):
    """docs/oidc.md: tokens over 16 KiB are refused before parsing, 401 `malformed_token` with
    `WWW-Authenticate`. A big but genuine token (an IdP that put every group in it) must be told so, not
    be taken for an API key and answered "invalid API key"."""
    idp, gw = stack
    groups = [f"group-{i:05d}-{'x' * 40}" for i in range(400)]
    big = idp.mint(tid="acme", groups=groups)
    assert len(big) > 16 * 1024
    with pytest.raises(openai.AuthenticationError) as info:
        chat(gw, big)
    assert info.value.code == "malformed_token", info.value.message
    assert "16384" in info.value.message
    assert info.value.response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    # Just under the bound it is verified as usual.
    fits = idp.mint(tid="acme", groups=groups[:200])
    assert 8 * 1024 < len(fits) < 16 * 1024
    assert chat(gw, fits).choices
