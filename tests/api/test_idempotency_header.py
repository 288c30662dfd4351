"""The `Idempotency-Key` header's value, as the gateway reads it from the raw request: 1 to 255
printable ASCII characters, anything else a 400 (a key is stored and compared, so it must be text)."""

from __future__ import annotations

import pytest

from multihome.api.responses.idempotent import key_of, one_key
from multihome.schema.errors import ApiError


@pytest.mark.parametrize("raw", [b"k-1", b"x" * 255, b"a b:c/d=e"])
def test_printable_ascii_keys_are_taken_as_they_are(raw):
    assert key_of(raw) == raw.decode()


@pytest.mark.parametrize("raw", [b"", b"x" * 256, b"k\x01", b"k\x7f", b"k\tk", "cl\u00e9".encode(), b"\xff\xfe"])
def test_empty_long_control_or_non_ascii_keys_are_a_400(raw):
    with pytest.raises(ApiError) as err:
        key_of(raw)
    assert err.value.status == 400 and "Idempotency-Key" in err.value.body.message


def test_two_keys_with_different_values_are_a_400_and_one_key_repeated_is_one_key():
    one_key([(b"content-type", b"application/json"), (b"idempotency-key", b"k")])
    one_key([(b"idempotency-key", b"k"), (b"accept", b"*/*"), (b"idempotency-key", b"k")])
    with pytest.raises(ApiError) as err:
        one_key([(b"idempotency-key", b"k-1"), (b"accept", b"*/*"), (b"idempotency-key", b"k-2")])
    assert err.value.status == 400 and err.value.body.code == "duplicate_idempotency_key"
    assert err.value.body.param == "idempotency-key"
