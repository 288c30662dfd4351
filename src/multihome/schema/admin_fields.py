"""Bounds on what an admin may store: the free-form fields of tenants, teams, API keys, policies,
entitlements, token revocations and contracts, and the dates and times they carry
(docs/storage.md "Field limits").

Why: every replica keeps the stored objects in memory (the snapshot), PostgreSQL refuses values
that SQLite would keep, and names and descriptions end up in response headers and log lines. So
each value is checked once, where it is written, and refused with a message that names the field
path and the limit. Pure functions: each returns a `Problem` (field path, message) or None, and
the caller raises its own error (storage: `Invalid`, policy and contracts: a problem list).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, NamedTuple

import msgspec

NAME_MAX = 200  # characters: a name (tenant, team, key), a model group, one entry of a list field
TEXT_MAX = 1000  # characters: a description, a note, a reason
LIST_MAX = 100  # entries of a list field: key scopes, one dimension of a policy rule, contract parties
RULES_MAX = 100  # rules in one policy
METADATA_MAX_BYTES = 4096  # a metadata object, encoded as compact JSON
METADATA_MAX_ITEMS = 64  # members and list entries, counted at every level
METADATA_MAX_DEPTH = 4  # nested objects and lists, the metadata object itself included
METADATA_KEY_MAX = 100  # characters of one member name
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # numbers in stored JSON: what every JSON reader can hold
# Dates and times an admin may give (UTC): far enough for any licence or expiry, and far enough
# from the ends of Python's calendar that a UTC offset or a day's arithmetic cannot overflow it.
FIRST_DAY, LAST_DAY = dt.date(1970, 1, 1), dt.date(9998, 12, 31)

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: what could break a
# header or forge a log line. No stored string may hold one (metadata included: one rule for all).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Problem(NamedTuple):
    field: str  # path of the offending value: "metadata.owner", "rules[2].description"
    message: str  # starts with the path, says the limit


def text(value: Any, field: str, *, max_len: int = NAME_MAX, required: bool = True) -> Problem | None:
    """A single-line string of at most `max_len` characters (non-blank when `required`)."""
    if not isinstance(value, str):
        return Problem(field, f"{field} must be a string")
    if required and not value.strip():
        return Problem(field, f"{field} must be a non-empty string")
    if len(value) > max_len:
        return Problem(field, f"{field} is longer than {max_len} characters ({len(value)})")
    return _control(value, field)


def strings(values: Any, field: str, *, max_items: int = LIST_MAX, max_len: int = NAME_MAX) -> Problem | None:
    """A list of at most `max_items` non-empty single-line strings of at most `max_len` characters."""
    if isinstance(values, str) or not isinstance(values, (list, tuple, set, frozenset)):
        return Problem(field, f"{field} must be a list of strings")
    if len(values) > max_items:
        return Problem(field, f"{field} has more than {max_items} entries ({len(values)})")
    for i, value in enumerate(values):
        found = text(value, f"{field}[{i}]", max_len=max_len)
        if found is not None:
            return found
    return None


def metadata(value: Any, field: str = "metadata") -> Problem | None:
    """A JSON object within the metadata limits (bytes, entries, depth, member and string lengths)."""
    if not isinstance(value, dict):
        return Problem(field, f"{field} must be a JSON object")
    return json_value(
        value,
        field,
        max_bytes=METADATA_MAX_BYTES,
        max_items=METADATA_MAX_ITEMS,
        max_depth=METADATA_MAX_DEPTH,
        key_max=METADATA_KEY_MAX,
        string_max=TEXT_MAX,
    )


def json_value(
    value: Any, field: str, *, max_bytes: int, max_items: int, max_depth: int, key_max: int, string_max: int
) -> Problem | None:
    """Plain JSON (objects, lists, strings, finite numbers within 64 bits, booleans, null) within
    these limits. Walked without recursion, and never deeper than `max_depth`."""
    items = 0
    stack: list[tuple[str, Any, int]] = [(field, value, 1)]
    while stack:
        path, node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                return Problem(
                    path, f"{path} is nested too deeply: at most {max_depth} levels of objects and lists in {field}"
                )
            items += len(node)
            if items > max_items:
                return Problem(field, f"{field} has more than {max_items} members and list entries in all")
            if isinstance(node, dict):
                for key, child in node.items():
                    if not isinstance(key, str):
                        return Problem(path, f"{path}: member names must be strings")
                    found = text(key, f"{path}: a member name", max_len=key_max, required=False)
                    if found is not None:
                        return Problem(path, found.message)
                    stack.append((f"{path}.{key}", child, depth + 1))
            elif not plain_strings(node, string_max, required=False):  # (a list of plain strings: done)
                stack.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(node))
        elif isinstance(node, str):
            found = text(node, path, max_len=string_max, required=False)
            if found is not None:
                return found
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not INT_MIN <= node <= INT_MAX:
                return Problem(path, f"{path}: integers must fit in 64 bits ({INT_MIN} to {INT_MAX})")
        elif isinstance(node, float):
            if not math.isfinite(node):
                return Problem(path, f"{path}: numbers must be finite")
        else:
            return Problem(path, f"{path}: only JSON values (objects, lists, strings, numbers, booleans, null)")
    size = len(msgspec.json.encode(value))
    if size > max_bytes:
        return Problem(field, f"{field} is larger than {max_bytes} bytes as JSON ({size})")
    return None


def day(value: Any, field: str) -> Problem | None:
    """A date from FIRST_DAY to LAST_DAY."""
    if not isinstance(value, dt.date):
        return Problem(field, f"{field} must be a date (YYYY-MM-DD)")
    if isinstance(value, dt.datetime):
        value = value.date()
    if not FIRST_DAY <= value <= LAST_DAY:
        return Problem(field, f"{field} must be from {FIRST_DAY} to {LAST_DAY}, not {value}")
    return None


def moment(value: Any, field: str) -> Problem | None:
    """A time with its UTC offset whose UTC date is from FIRST_DAY to LAST_DAY (then
    `value.astimezone(UTC)` is safe)."""
    if not isinstance(value, dt.datetime):
        return Problem(field, f"{field} must be a time (RFC 3339, e.g. 2030-01-01T00:00:00Z)")
    if value.tzinfo is None or value.utcoffset() is None:
        return Problem(field, f"{field} must be timezone-aware: give its UTC offset (e.g. 2030-01-01T00:00:00Z)")
    try:
        found = day(value.astimezone(dt.UTC).date(), field)
    except OverflowError:  # year 1 at +05:00, year 9999 at -05:00
        found = Problem(field, "")
    if found is not None:
        return Problem(field, f"{field} must be a time from {FIRST_DAY}T00:00:00Z to {LAST_DAY}T23:59:59Z")
    return None


def plain_strings(values: list[Any], max_len: int, *, required: bool) -> bool:
    """Whether every one of `values` is a string `text` takes (of at most `max_len` characters, non-blank when
    `required`, no control character), checked in bulk: a policy's 20,000 entries one `text` call each held the
    event loop ~20 ms, two checks of them ~40 ms. False sends the caller to `text`, for its message."""
    if not values or set(map(type, values)) != {str}:
        return not values
    if max(map(len, values)) > max_len or (required and not all(map(str.strip, values))):
        return False
    return _CONTROL.search("".join(values)) is None


def _control(value: str, field: str) -> Problem | None:
    found = _CONTROL.search(value)
    if found is None:
        return None
    return Problem(
        field,
        f"{field} contains a control character (U+{ord(found.group()):04X} at position "
        f"{found.start()}); line breaks, tabs and other control characters are not allowed",
    )
