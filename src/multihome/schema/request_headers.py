"""A request's headers by name, read from its ASGI scope: indexed once per request.

ASGI gives the headers as a list of (name, value) byte pairs, names lower-case. A call reads several
of them (its credential, content type and length, route narrowing); with more than a few headers (the
OpenAI SDKs send ~16) a scan of the list in Python for each cost more than the rest of reading them:
then the first read makes a dict of the list in C (the first of a repeated name wins, as a scan finds
it) and keeps it in the scope, beside the list it was made from, so a scope whose list is replaced is
indexed again. A short list (a bare client's four) is scanned: that is cheaper than the index.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from .errors import ApiError

_INDEX = "multihome.header_index"
_name = itemgetter(0)


def index_of(scope: dict[str, Any]) -> dict[bytes, bytes]:
    """The request's headers by name (lower-case), the first of a repeated name: made on the first read."""
    headers = scope["headers"]
    index = scope.get(_INDEX)
    if index is not None and index[0] is headers:
        found: dict[bytes, bytes] = index[1]
        return found
    made = dict(headers)
    if len(made) != len(headers):  # a name repeated: the first of it wins, as a scan finds it
        made = dict(reversed(headers))
    scope[_INDEX] = (headers, made)
    return made


# Up to this many headers a scan costs less than making the index (callgrind, a credential and three
# header reads: 4 headers 12,407 instructions scanned, 14,433 indexed; 16, as the OpenAI SDK sends,
# 24,354 scanned, 19,315 indexed).
SCAN_MAX = 8


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    """The first value of header `name` (lower-case), or None."""
    headers = scope["headers"]
    if len(headers) <= SCAN_MAX:
        for key, value in headers:
            if key == name:
                found: bytes | None = value
                return found
        return None
    return index_of(scope).get(name)


def repeated(scope: dict[str, Any], name: bytes) -> bool:
    """Whether header `name` (lower-case) was sent more than once."""
    headers = scope["headers"]
    if len(index_of(scope)) == len(headers):  # no name repeated at all: the common case, no count
        return False
    return list(map(_name, headers)).count(name) > 1


def single(scope: dict[str, Any], name: bytes) -> bytes | None:
    """The value of header `name` (lower-case), one that takes a single value (a narrowing), or None; a 400 naming
    it when it was sent more than once: a duplicate (a client's or a proxy's) would otherwise be read as its
    first copy, silently not the narrowing the other asked for. Counted only when the header is there."""
    value = header(scope, name)
    if value is not None and repeated(scope, name):
        shown = name.decode("latin-1")
        raise ApiError(
            400,
            f"The request has more than one '{shown}' header; send it once, with every value in it.",
            param=shown,
            code="duplicate_header",
        )
    return value
