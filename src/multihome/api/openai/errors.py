"""The OpenAI family's errors: its envelope (`{"error": {"message", "type", "param", "code"}}`, as
`ApiError.to_bytes` writes it), which the OpenAI door, the admin API and the gateway's own routes
answer in; and an upstream's 4xx re-shaped into it and attributed to the deployment that answered."""

from __future__ import annotations

import msgspec

from ...providers.base import CREDENTIALS_REJECTED
from ...routing.attempts import Served
from ...schema.bounded import Decoder
from ...schema.errors import ApiError, no_retry
from ..render import Family


def error_body(err: ApiError, request_id: bytes) -> bytes:
    return err.to_bytes()  # the envelope every ApiError carries (schema/errors.py)


OPENAI = Family("openai", error_body)


class _UpstreamErrorPeek(msgspec.Struct):
    message: str | None = None
    code: str | int | None = None
    param: str | None = None
    type: str | None = None


class _UpstreamError(msgspec.Struct):
    error: _UpstreamErrorPeek | str | None = None


_upstream_error = Decoder(_UpstreamError)


def upstream_client_error(served: Served) -> ApiError:
    """An upstream 4xx, re-shaped into OpenAI's envelope and attributed to the deployment."""
    dep = served.deployment
    reshape = getattr(dep.adapter, "client_error_body", None)
    body = reshape(served.status, served.body) if reshape is not None else served.body
    try:
        err = _upstream_error.decode(body).error
    except msgspec.DecodeError:
        err = None
    detail = (
        err.message if isinstance(err, _UpstreamErrorPeek) and err.message else (err if isinstance(err, str) else "")
    )
    code = err.code if isinstance(err, _UpstreamErrorPeek) and err.code is not None else None
    param = err.param if isinstance(err, _UpstreamErrorPeek) else None
    rejected = bool(served.attempts) and served.attempts[-1].outcome == CREDENTIALS_REJECTED
    if served.status in (401, 403) or rejected:
        # The client's key was fine; the gateway's own credentials for this provider were not.
        return ApiError(
            502,
            f"Deployment '{dep.name}' (provider '{dep.provider}') rejected the gateway's credentials "
            f"(HTTP {served.status}). An operator must fix the provider's credentials.",
            type="server_error",
            code="upstream_auth_failed",
            headers=no_retry(),  # the same credentials are rejected again until an operator changes them
        )
    message = f"Deployment '{dep.name}' rejected the request (HTTP {served.status})" + (
        f": {detail}" if detail else "."
    )
    return ApiError(served.status, message, param=param, code=str(code) if code is not None else None)
