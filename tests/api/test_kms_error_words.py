"""A KMS 503 says what happened to the request: a write stored nothing, a read could not read."""

from __future__ import annotations

import pytest

from multihome.api.kms_errors import for_request, kms_api_error
from multihome.api.responses.common import stored
from multihome.crypto import KmsUnavailable
from multihome.crypto.errors import KmsRefused
from multihome.schema.errors import ApiError

pytestmark = pytest.mark.anyio


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
