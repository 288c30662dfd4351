"""OpenAI's error envelope, the only error shape a client ever sees."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

ECHO_MAX = 64  # characters of a client's id or name an error message repeats (docs/hostile-input.md)


def echo(value: object) -> str:
    """What an error message shows of something the client sent (an id, a name, a field): its first
    ECHO_MAX characters, and "…" when there was more. A path segment or a JSON string can be megabytes;
    repeated whole, it would fill the answer, the client's logs and every log line that quotes the error."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= ECHO_MAX else text[:ECHO_MAX] + "…"


_QUOTED = re.compile(f"'([^']{{{ECHO_MAX + 1},}})'|`([^`]{{{ECHO_MAX + 1},}})`")


def echo_quoted(text: str) -> str:
    """A decoder's message (msgspec's `Invalid enum value 'x'`, `unknown field `x``) with each value of the
    client's it quotes shortened as `echo` shortens one."""
    return _QUOTED.sub(lambda m: f"'{echo(m[1])}'" if m[1] is not None else f"`{echo(m[2])}`", text)


_PATH_SEGMENTS = 12  # segments of an unknown path an error shows (no served path has more)


def echo_path(path: str) -> str:
    """An unknown path as an error shows it: each segment by its start (`echo`), at most _PATH_SEGMENTS of
    them, so a served path's shape stays readable and a hostile one stays short."""
    parts = path.split("/")
    shown = "/".join(echo(part) for part in parts[:_PATH_SEGMENTS])
    return shown + "/…" if len(parts) > _PATH_SEGMENTS else shown


class ErrorBody(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class ApiError(Exception):
    """An error to return to the client as-is: status, OpenAI envelope, optional headers. `type` defaults
    by status: a 403 is `permission_error` (as OpenAI's SDK names it, PermissionDeniedError, and as every
    403 of this gateway is typed), anything else `invalid_request_error`."""

    # Routing's attempts, when routing raised it (routing/attempts.py AllDeclined sets its own): read by
    # accounting for every refused call, as an attribute that is always there (a getattr default would
    # raise and clear an AttributeError per refusal).
    attempts: Sequence[Any] = ()

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        if type is None:
            type = "permission_error" if status == 403 else "invalid_request_error"
        self.body = ErrorBody(message=message, type=type, param=param, code=code)
        self.headers = headers or {}

    def to_bytes(self) -> bytes:
        return msgspec.json.encode(ErrorEnvelope(self.body))


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def storage_quota_exceeded(message: str, code: str) -> ApiError:
    """A write past a tenant's stored-state limit (state/tenant_quota.py): a quota, as a used-up budget is
    (429 `insufficient_quota`), that no retry meets room in until something is deleted."""
    return ApiError(429, message, type="insufficient_quota", code=code, headers=no_retry())


def no_retry(headers: dict[str, str] | None = None) -> dict[str, str]:
    """`headers` and `x-should-retry: false`, for an error the same request meets again however soon it is
    retried (a used-up budget, a provider rejecting the gateway's credentials, an unreadable row). The
    openai and anthropic SDKs obey it before their own rule, which retries every 408, 409, 429 and 5xx
    (twice by default; the anthropic SDK after sleeping whatever `retry-after` says, however long)."""
    return {**(headers or {}), "x-should-retry": "false"}
