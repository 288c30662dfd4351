"""A KMS 503 says what happened to the request: a write stored nothing, a read could not read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from multihome.api.kms_errors import for_request, kms_api_error
from multihome.api.responses.common import stored
from multihome.crypto import KmsUnavailable
from multihome.crypto.errors import KmsRefused
from multihome.crypto.keyring import Keyring
from multihome.crypto.service import CryptoServices
from multihome.schema.errors import ApiError
from stored_app import agent_world, sdk_client

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-kms-words"


async def _opens_under_a_kms_away() -> None:
    raise KmsUnavailable("Vault Transit at 127.0.0.1:1", "decrypt: ConnectError")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_read_refused_for_the_kms_does_not_say_nothing_was_stored(method):
    with pytest.raises(ApiError) as raised:
        await stored(_opens_under_a_kms_away())  # where the Responses and Conversations routes call the store
    err = for_request(raised.value, method)  # as the gateway renders it
    assert err.status == 503 and err.body.code == "kms_unavailable" and err.headers["retry-after"] == "5"
    assert "nothing was stored" not in err.body.message and "cannot be read now" in err.body.message
    assert "Vault Transit at 127.0.0.1:1" in err.body.message and "ConnectError" not in err.body.message


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_a_write_refused_for_the_kms_says_nothing_was_stored(method):
    with pytest.raises(ApiError) as raised:
        await stored(_opens_under_a_kms_away())
    err = for_request(raised.value, method)
    assert err.body.code == "kms_unavailable" and "nothing was stored" in err.body.message


def test_a_refusal_is_worded_by_the_operation_too():
    refused = KmsRefused("AWS KMS", "AccessDenied")
    assert "cannot be read now" in kms_api_error(refused, read=True).body.message
    assert "nothing was stored" in kms_api_error(refused).body.message


@pytest.fixture
async def kms_world(tmp_path, monkeypatch) -> AsyncIterator[tuple]:
    monkeypatch.setenv("MH_TEST_KMS_WORDS", ADMIN_KEY)
    async with agent_world(str(tmp_path / "mh.db"), tmp_path, "MH_TEST_KMS_WORDS", ADMIN_KEY) as world:
        yield world


def _kms_away(w, monkeypatch) -> None:
    """The app's data keys evicted (cache_ttl_s), so the next open asks the KMS, which cannot be reached."""
    (keyring,) = [s.keyring for s in w.app.services if isinstance(s, CryptoServices)]
    keyring.forget()

    def away(self, op, row, method):
        raise KmsUnavailable("local KMS", f"{op}: ConnectError")

    monkeypatch.setattr(Keyring, "row_call", away)


async def test_a_stored_response_read_while_the_kms_is_away_is_a_read_s_503(kms_world, monkeypatch):
    """Through the gateway, with the official SDK: a stored response whose data key is no longer cached, read
    while the KMS cannot be reached, is a 503 that says it cannot be read now (it said nothing was stored); a
    create continuing it (`previous_response_id`) stores nothing and says so."""
    w, _, transport, _ = kms_world
    _, key = await w.tenant("acme")
    async with sdk_client(key, transport) as sdk:
        kept = await sdk.responses.create(model="g", input="remember me")
        _kms_away(w, monkeypatch)
        with pytest.raises(openai.APIStatusError) as read:
            await sdk.responses.retrieve(kept.id)
        with pytest.raises(openai.APIStatusError) as write:
            await sdk.responses.create(model="g", input="and then", previous_response_id=kept.id)
    for refused in (read.value, write.value):
        assert refused.status_code == 503 and refused.body["code"] == "kms_unavailable", refused.body
    assert "cannot be read now" in read.value.body["message"], read.value.body
    assert "nothing was stored" not in read.value.body["message"]
    assert "nothing was stored" in write.value.body["message"], write.value.body


async def test_a_count_whose_conversation_is_read_while_the_kms_is_away_is_a_503(kms_world, monkeypatch):
    """`POST /v1/responses/input_tokens` rebuilds a conversation's items as a turn would: with the KMS away that
    read is the same 503 `kms_unavailable` naming it, not a 500."""
    w, _, transport, _ = kms_world
    _, key = await w.tenant("acme")
    async with sdk_client(key, transport) as sdk:
        conv = await sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "sealed"}])
        _kms_away(w, monkeypatch)
        with pytest.raises(openai.APIStatusError) as counted:
            await sdk.responses.input_tokens.count(model="g", input="and then?", conversation=conv.id)
    assert (counted.value.status_code, counted.value.body["code"]) == (503, "kms_unavailable"), counted.value.body
    assert "local KMS" in counted.value.body["message"] and "ConnectError" not in counted.value.body["message"]
