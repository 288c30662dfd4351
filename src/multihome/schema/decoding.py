"""Turn msgspec's decode errors into client-facing 400s that name the offending field."""

from __future__ import annotations

import re

import msgspec

from .errors import ApiError, bad_request

_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _param(path: str) -> str | None:
    path = path.lstrip(".")
    return path or None


def decode_error(exc: msgspec.DecodeError, *, prefix: str = "") -> ApiError:
    """Map a msgspec error to 400 with `param` set to the JSON path (e.g. `messages[0].content`)."""
    text = str(exc)
    match = _PATH.search(text)
    if isinstance(exc, msgspec.ValidationError):
        detail = text[: match.start()] if match else text
        param = _param(prefix + (match.group("path") if match else ""))
        where = f" at '{param}'" if param else ""
        return bad_request(f"Invalid request body{where}: {detail}.", param=param, code="invalid_type")
    return bad_request(
        f"Request body is not valid JSON ({text}). Send a JSON object with Content-Type: application/json.",
        code="invalid_json",
    )


_top = msgspec.json.Decoder(dict[str, msgspec.Raw])


def decode_views(body: bytes, typed: msgspec.json.Decoder):
    """A request body as its top-level fields (raw, for pass-through) and as the typed struct.

    Raises 400s that say what to fix: not JSON, not UTF-8, not an object, or a field of the wrong type."""
    if not body.isascii():
        _check_utf8(body)
    try:
        raw = _top.decode(body)
    except msgspec.DecodeError as exc:
        if isinstance(exc, msgspec.ValidationError):
            raise bad_request("Request body must be a JSON object.", code="invalid_json") from None
        raise decode_error(exc) from None
    try:
        return raw, typed.decode(body)
    except msgspec.DecodeError as exc:
        raise decode_error(exc) from None


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
