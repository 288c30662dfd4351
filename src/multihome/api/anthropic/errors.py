"""Anthropic's error envelope for every failure on the Anthropic door.

The gateway raises `ApiError` (status + OpenAI-style body) everywhere; this family keeps the
status and message and re-shapes the body: `{"type":"error","error":{"type","message"},"request_id"}`.
The anthropic SDK picks its exception class from the status (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 429 RateLimitError, 503 ServiceUnavailableError...).
"""

from __future__ import annotations

import msgspec

from ...schema.errors import ApiError
from ..render import Family


# Anthropic clients send `x-api-key`; without any key, say which header and which SDK variable. A new error
# each time (render.Family.missing_key).
def missing_key() -> ApiError:
    return ApiError(
        401,
        "Missing API key. Send 'x-api-key: <key>' or 'Authorization: Bearer <key>' with the key issued for this "
        "gateway (the anthropic SDK sends ANTHROPIC_API_KEY).",
        code="invalid_api_key",
    )


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(err: ApiError, request_id: bytes) -> bytes:
    return msgspec.json.encode(
        {
            "type": "error",
            "error": {"type": error_type(err.status), "message": err.body.message},
            "request_id": request_id.decode(),
        }
    )


ANTHROPIC = Family("anthropic", error_body, missing_key, (b"x-request-id", b"request-id"))
