"""A request's headers by name, read from its ASGI scope: indexed once per request.

ASGI gives the headers as a list of (name, value) byte pairs, names lower-case. A call reads several
of them (its credential, content type and length, route narrowing), and a scan of the list for each
in Python cost more than the rest of reading them: the first read makes a dict of the list in C (the
first of a repeated name wins, as a scan would find it) and keeps it in the scope, beside the list it
was made from, so a scope whose list is replaced is indexed again.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

_INDEX = "multihome.header_index"
_name = itemgetter(0)


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    """The first value of header `name` (lower-case), or None."""
    headers = scope["headers"]
    index = scope.get(_INDEX)
    if index is None or index[0] is not headers:
        index = scope[_INDEX] = (headers, dict(reversed(headers)))
    found: bytes | None = index[1].get(name)
    return found


def count(scope: dict[str, Any], name: bytes) -> int:
    """How many times header `name` (lower-case) was sent."""
    return list(map(_name, scope["headers"])).count(name)
