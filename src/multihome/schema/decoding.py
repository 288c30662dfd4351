"""Decode every request body (both front doors and the admin API) in one place, and turn what can
go wrong into client-facing 400s that name the offending field."""

from __future__ import annotations

import re
from typing import Any, TypeVar, overload

import msgspec

from . import bounds
from .errors import ApiError, bad_request, echo_quoted

_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]*)`")


def _param(path: str) -> str | None:
    # msgspec writes a map's key as `[...]` (`metadata[...]`): the param is the map, as OpenAI names it.
    path = path.replace("[...]", "").lstrip(".")
    return path or None


def decode_error(exc: msgspec.DecodeError, *, prefix: str = "") -> ApiError:
    """Map a msgspec error to 400 with `param` set to the JSON path (e.g. `messages[0].content`)."""
    text = str(exc)
    match = _PATH.search(text)
    if isinstance(exc, msgspec.ValidationError):
        if match is None and text.startswith("Expected `object`"):
            return bad_request("Request body must be a JSON object.", code="invalid_json")
        param = _param(prefix + (match.group("path") if match else ""))
        missing = _MISSING.match(text)
        if missing is not None:  # OpenAI's words, and the field itself as `param` (not the object holding it)
            field = missing.group("field")  # a field of the gateway's own types: short, never the client's text
            param = f"{param}.{field}" if param else field
            return bad_request(
                f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
            )
        detail = echo_quoted(text[: match.start()] if match else text)
        where = f" at '{param}'" if param else ""
        return bad_request(f"Invalid request body{where}: {detail}.", param=param, code="invalid_type")
    return bad_request(
        f"Request body is not valid JSON ({text}). Send a JSON object with Content-Type: application/json.",
        code="invalid_json",
    )


_top = msgspec.json.Decoder(dict[str, msgspec.Raw])

_TOO_DEEP = (
    "Request body is nested too deeply to be read (arrays and objects inside each other, hundreds of "
    "levels deep). Send the same data nested less deeply."
)


_T = TypeVar("_T")


@overload
def decode_body(body: bytes, typed: msgspec.json.Decoder[_T]) -> _T: ...
@overload
def decode_body(body: bytes, typed: object) -> Any: ...  # a type or a union of types (the admin API's bodies)
def decode_body(body: bytes, typed: object) -> Any:
    """`body` decoded as `typed` (a Decoder, or a type for the admin API's bodies); raises a 400 that
    says what to fix: not JSON, not an object, a field of the wrong type, or nested too deeply
    (msgspec raises RecursionError past the interpreter's recursion limit)."""
    try:
        if isinstance(typed, msgspec.json.Decoder):
            return typed.decode(body)
        return msgspec.json.decode(body, type=typed)
    except msgspec.DecodeError as exc:
        raise decode_error(exc) from None
    except RecursionError:
        raise bad_request(_TOO_DEEP, code="nested_too_deeply") from None


def top_level(body: bytes) -> dict[str, msgspec.Raw]:
    """A request body's top-level fields, raw (for pass-through and for peeking at its kind)."""
    return decode_body(body, _top)


# A body beyond this has its array of items counted (each skipped, not decoded) before the typed
# decode: a body of 500,000 tiny items would take the typed decode ~0.3 s, the count ~0.06 s. A body
# this short cannot hold more than MAX_ITEMS of anything (the shortest JSON value and its comma are 2
# bytes), so it needs no count at all: the common request pays one length comparison.
COUNT_ITEMS_OVER = 2 * bounds.MAX_ITEMS
_items = msgspec.json.Decoder(list[msgspec.Raw])
_ITEM_ARRAYS: dict[int, str] = {}  # id of a request's decoder -> its top-level array of items


def count_items(typed: msgspec.json.Decoder[_T], field: str) -> msgspec.json.Decoder[_T]:
    """Register `typed`'s top-level array of the request's items (`messages`, `input`): decode_views
    refuses more than bounds.MAX_ITEMS of them (a 400 naming `field`) before the typed decode."""
    _ITEM_ARRAYS[id(typed)] = field
    return typed


def decode_views(body: bytes, typed: msgspec.json.Decoder[_T]) -> tuple[dict[str, msgspec.Raw], _T]:
    """A request body as its top-level fields (raw, for pass-through) and as the typed struct.

    Raises 400s that say what to fix: not JSON, not UTF-8, not an object, a field of the wrong type, too deep."""
    if not body.isascii():
        _check_utf8(body)
    try:  # decode_body's errors, in one frame for both views
        if len(body) > COUNT_ITEMS_OVER:
            top = _top.decode(body)
            _count_items(top, typed)
            return top, typed.decode(body)
        return _top.decode(body), typed.decode(body)
    except msgspec.DecodeError as exc:
        raise decode_error(exc) from None
    except RecursionError:
        raise bad_request(_TOO_DEEP, code="nested_too_deeply") from None


def _count_items(top: dict[str, msgspec.Raw], typed: object) -> None:
    field = _ITEM_ARRAYS.get(id(typed))
    if field is None:
        return
    array = top.get(field)
    if array is not None and memoryview(array)[:1].tobytes() == b"[":
        length = len(_items.decode(array))
        if length > bounds.MAX_ITEMS:
            raise bounds.too_many_items(length, field)


def _check_utf8(body: bytes) -> None:
    """JSON is UTF-8 (RFC 8259). The decoder checks the strings it reads but only skips the
    fields it does not model, which translators read later (and pass-through upstreams get as
    sent): the whole body is checked once here. ASCII bodies, the common case, skip this."""
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"Request body is not valid UTF-8 (byte {exc.start}). Send JSON encoded as UTF-8.", code="invalid_json"
        ) from None
