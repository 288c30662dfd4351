"""`Authenticator.at_once`: what the gateway's hot path asks before `authenticate`. A key from the
environment (or open access, or a refusal) is answered without a coroutine; a managed key or a token
is left to `authenticate`, which answers every credential exactly as before."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace

import pytest

from multihome.identity.authenticator import Authenticator
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal

ENV = Principal(tenant="default", subject="env:KEY", source="static")


def scope(*headers: tuple[bytes, bytes]) -> dict:
    return {"headers": list(headers)}


def bearer(key: bytes) -> tuple[bytes, bytes]:
    return (b"authorization", b"Bearer " + key)


def auth(**kwargs) -> Authenticator:
    return Authenticator({hashlib.sha256(b"env-secret").digest(): ENV}, **kwargs)


def test_a_key_from_the_environment_is_answered_at_once():
    assert auth().at_once(scope(bearer(b"env-secret"))) is ENV
    assert auth().at_once(scope((b"x-api-key", b"env-secret"))) is ENV


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ((), 401, "invalid_api_key"),
        ((bearer(b"wrong"),), 401, "invalid_api_key"),
        ((bearer(b"env-secret"), bearer(b"env-secret")), 400, "duplicate_credentials"),
    ],
)
def test_refusals_are_answered_at_once_and_the_same_by_authenticate(headers, status, code):
    for ask in (auth().at_once, lambda s: asyncio.run(auth().authenticate(s))):
        with pytest.raises(ApiError) as err:
            ask(scope(*headers))
        assert (err.value.status, err.value.body.code) == (status, code)


def test_a_managed_key_is_left_to_authenticate():
    record = SimpleNamespace(
        tenant_id="ten_a", id="key_a", team_id=None, roles=["member"], scopes_models=None, scopes_endpoints=None
    )
    a = auth(managed=lambda presented: record if presented == "mh_abc" else None)
    assert a.at_once(scope(bearer(b"mh_abc"))) is None
    principal = asyncio.run(a.authenticate(scope(bearer(b"mh_abc"))))
    assert (principal.tenant, principal.key_id) == ("ten_a", "key_a")
    with pytest.raises(ApiError):
        asyncio.run(a.authenticate(scope(bearer(b"mh_other"))))
    assert asyncio.run(a.authenticate(scope(bearer(b"env-secret")))) is ENV


def test_open_access_is_anonymous_at_once():
    principal = Authenticator({}, open_access=True).at_once(scope())
    assert principal is not None and principal.source == "unauthenticated"
