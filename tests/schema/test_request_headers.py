"""A request's headers, indexed once per request: the first of a repeated name wins (as a scan of the
list finds it), a replaced list is indexed again, and a repeated credential is refused naming the
header whose second copy comes first."""

from __future__ import annotations

import pytest

from multihome.identity.authenticator import credential_of
from multihome.schema.errors import ApiError
from multihome.schema.request_headers import SCAN_MAX, header, repeated

# Enough other headers that the list is indexed, not scanned (as an OpenAI SDK's ~16 are).
PAD = [(b"x-pad-%d" % i, b"v") for i in range(SCAN_MAX)]
LISTS = pytest.mark.parametrize("pad", [[], PAD], ids=["scanned", "indexed"])


@LISTS
def test_the_first_of_a_repeated_name_wins_and_absent_is_none(pad):
    scope = {"headers": [*pad, (b"a", b"1"), (b"b", b"2"), (b"a", b"3")]}
    assert (header(scope, b"a"), header(scope, b"b"), header(scope, b"c")) == (b"1", b"2", None)
    assert (repeated(scope, b"a"), repeated(scope, b"b"), repeated(scope, b"c")) == (True, False, False)
    assert not repeated({"headers": [*pad, (b"a", b"1"), (b"b", b"2")]}, b"a")


def test_a_replaced_header_list_is_indexed_again():
    scope = {"headers": [*PAD, (b"a", b"1")]}
    assert header(scope, b"a") == b"1"
    scope["headers"] = [*PAD, (b"a", b"2")]
    assert header(scope, b"a") == b"2"


@LISTS
@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ([(b"authorization", b"Bearer k"), (b"authorization", b"Bearer k")], "authorization"),
        ([(b"x-api-key", b"k"), (b"x-api-key", b"j")], "x-api-key"),
        (
            [(b"x-api-key", b"k"), (b"authorization", b"Bearer k"), (b"x-api-key", b"k"), (b"authorization", b"B")],
            "x-api-key",
        ),
        (
            [(b"authorization", b"Bearer k"), (b"x-api-key", b"k"), (b"authorization", b"B"), (b"x-api-key", b"k")],
            "authorization",
        ),
    ],
)
def test_a_repeated_credential_is_refused_naming_the_first_repeated(headers, named, pad):
    with pytest.raises(ApiError) as err:
        credential_of({"headers": [*pad, *headers]})
    assert err.value.status == 400 and err.value.body.param == named


@LISTS
def test_the_credential_is_the_bearer_token_else_the_api_key(pad):
    assert credential_of({"headers": [*pad, (b"x-api-key", b"k2"), (b"authorization", b"bearer k1 ")]}) == b"k1"
    assert credential_of({"headers": [*pad, (b"x-api-key", b" k2")]}) == b"k2"
    assert credential_of({"headers": [*pad, (b"authorization", b"Basic xyz")]}) is None
    assert credential_of({"headers": pad}) is None
