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
