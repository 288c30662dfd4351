"""A list the admin API answers a page at a time (docs/api.md "Lists"): `?limit=` (1-1000, default 1000) and
`?after=<last_id>` of the page before; the answer's `has_more` says whether another page follows and `last_id` is
the `after` of the next. For lists a tenant's admin can grow to thousands of rows (keys, teams, policies, MCP
servers): one answer of 100,000 keys held the event loop 2.4 s and was 30 MB."""

from __future__ import annotations

import re
from typing import Any

from ...schema.errors import ApiError
from ...storage.row_reads import Page
from .route import AdminCall, listing

_WHOLE = re.compile(r"[+-]?[0-9]{1,20}")  # bounded before int(): no 100 000-digit conversions
MAX_PAGE = 1000  # rows of one answer at most, and the default
QUERY = ("limit", "after")  # the query parameters, as a Route declares them
SAYS = (  # in the route's summary
    "a page at a time (?limit= 1-1000, default 1000; ?after=<last_id of the page before>; has_more says whether "
    "another follows)"
)


def query_int(q: dict[str, str], name: str, lo: int, hi: int, default: int | None = None) -> int | None:
    """A whole-number query parameter from lo to hi, else 400 saying so."""
    text = q.get(name)
    if not text:
        return default
    if not _WHOLE.fullmatch(text) or not lo <= int(text) <= hi:
        raise ApiError(
            400, f"Query parameter '{name}' must be a whole number from {lo} to {hi}.", param=name, code="invalid_value"
        )
    return int(text)


def asked(c: AdminCall) -> tuple[int, str | None]:
    """(limit, after) of a call to a paged list; 400 for a limit out of range (an unknown `after`: the store's)."""
    return limit_after(c.query)


def limit_after(q: dict[str, str]) -> tuple[int, str | None]:
    """`asked` of a query as a dict (each parameter's last value): the gateway's own lists outside the admin API."""
    limit = query_int(q, "limit", 1, MAX_PAGE, MAX_PAGE)
    assert limit is not None
    return limit, q.get("after") or None


def paged(found: Page[Any], data: list[Any] | None = None) -> dict[str, Any]:
    """A page as a list response: its rows (or `data`, their views), the unreadable ones, has_more and last_id."""
    out = listing(list(found) if data is None else data, found.unreadable)
    return {**out, "has_more": found.more, "last_id": found.last}
