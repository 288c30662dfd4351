"""Provider-shaped error descriptions shared by both kinds (the envelope differs per kind)."""

from __future__ import annotations

from http import HTTPStatus
from typing import NamedTuple


class ErrorSpec(NamedTuple):
    status: int
    message: str
    type: str | None = "invalid_request_error"
    code: str | None = None
    param: str | None = None


# status -> (type, code, message) for the `status=<code>` fault knob.
_BY_STATUS = {
    400: ("invalid_request_error", "invalid_request_error", "Simulated bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "permission_denied", "You are not allowed to access this resource."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    408: ("invalid_request_error", "timeout", "Request timed out."),
    409: ("invalid_request_error", "conflict", "Conflict."),
    413: ("invalid_request_error", "request_too_large", "Request too large."),
    422: ("invalid_request_error", "unprocessable_entity", "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", "server_error", "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", "server_error", "Bad gateway."),
    503: ("server_error", "server_error", "The server is overloaded or not ready yet."),
    504: ("server_error", "server_error", "Gateway timeout."),
}


def error_for_status(status: int) -> ErrorSpec:
    known = _BY_STATUS.get(status)
    if known is not None:
        type_, code, message = known
        return ErrorSpec(status, message, type_, code)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if status >= 500:
        return ErrorSpec(status, f"{phrase}.", "server_error", "server_error")
    return ErrorSpec(status, f"{phrase}.", "invalid_request_error", phrase.lower().replace(" ", "_").replace("-", "_"))
