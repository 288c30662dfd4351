"""Shared HTTP error classification for OpenAI-shaped upstream APIs."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import msgspec

from ..schema.bounded import Decoder
from .base import (
    CAPACITY,
    CLIENT_ERROR,
    CONTEXT_OVERFLOW,
    CONTEXT_OVERFLOW_LABEL,
    REFUSAL,
    UNAVAILABLE,
    UNSUPPORTED,
    Classified,
)

# Error codes that mean "not this deployment" rather than "not this request".
_UNSUPPORTED_CODES = frozenset({"unsupported_parameter", "unsupported_value", "unsupported_model_feature"})


class _ErrorInner(msgspec.Struct):
    code: str | None = None
    type: str | None = None
    message: str | None = None


class _ErrorPeek(msgspec.Struct):
    error: _ErrorInner | str | None = None


_error_decoder = Decoder(_ErrorPeek)


def error_code(body: bytes) -> str | None:
    try:
        err = _error_decoder.decode(body).error
    except msgspec.DecodeError:
        return None
    if isinstance(err, _ErrorInner):
        return err.code or err.type
    return None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds: `retry-after-ms` first (as OpenAI's SDK does), then `retry-after`."""
    ms = headers.get("retry-after-ms") or headers.get("x-ms-retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def classify_http(status: int, headers: Mapping[str, str], body: bytes) -> Classified:
    label = f"http_{status}"
    if status == 429 or status == 408:
        return Classified(CAPACITY, label, retry_after_seconds(headers))
    if status >= 500:
        return Classified(UNAVAILABLE, label, retry_after_seconds(headers))
    code = error_code(body)
    if code == "content_filter":
        return Classified(REFUSAL, "content_filter")
    if code == "context_length_exceeded":
        return Classified(CONTEXT_OVERFLOW, CONTEXT_OVERFLOW_LABEL)
    if code in _UNSUPPORTED_CODES:
        return Classified(UNSUPPORTED, "unsupported_parameter")
    return Classified(CLIENT_ERROR, label)
