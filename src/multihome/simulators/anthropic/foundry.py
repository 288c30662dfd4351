"""The ``foundry_anthropic`` kind: Claude on Microsoft Foundry, Anthropic's Messages API served by a
Foundry resource at ``POST /anthropic/v1/messages``.

Everything past the door is the ``anthropic`` app's (bodies, streams, Anthropic error envelopes);
what differs is Azure's front: the path prefix, and the credentials a Foundry resource takes, an
Azure key in ``x-api-key`` (``api-key`` also works, as older resources required it) or an Entra ID
bearer token, never both. Azure's gateway rejects bad credentials before Claude sees the call, so
those answers use Azure's ``{"error": {"code", "message"}}`` envelope, not Anthropic's.
"""

from __future__ import annotations

from ..app import CHAT, Route
from ..config import SimulatorConfig
from ..errors import ErrorSpec
from ..state import SimState
from .api import AnthropicApp

_PREFIX = b"/anthropic"
# ErrorSpec.type of the answers Azure's gateway gives itself (error_payload writes Azure's envelope).
_AZURE = "azure"
_BAD_KEY = ErrorSpec(
    401,
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource.",
    _AZURE,
    "401",
)
_NO_CREDENTIALS = ErrorSpec(
    401,
    "Access denied due to missing subscription key or Authorization token. Make sure to include an "
    "x-api-key header or an Authorization bearer token.",
    _AZURE,
    "401",
)
_BAD_TOKEN = ErrorSpec(
    401,
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://ai.azure.com), or have expired.",
    _AZURE,
    "PermissionDenied",
)
_BOTH = ErrorSpec(401, "Provide exactly one of an API key or an Authorization bearer token.", _AZURE, "401")


class FoundryAnthropicApp(AnthropicApp):
    kind = "foundry_anthropic"
    auth_headers: tuple[bytes, ...] = (b"x-api-key", b"api-key", b"authorization")

    def __init__(self, config: SimulatorConfig, state: SimState) -> None:
        super().__init__(config, state)
        self._entra = b"Bearer " + config.entra_token.encode() if config.entra_token else None

    def route(self, method: bytes, path: bytes, query: bytes) -> Route:
        # Foundry serves the Messages call only: no model listing under /anthropic/ (deployments
        # are managed in Azure), so everything else is Azure's 404.
        if method == b"POST" and path == _PREFIX + b"/v1/messages":
            return Route(CHAT)
        return Route(None, error=ErrorSpec(404, "Resource not found", _AZURE, "404"))

    def auth_error(self, headers: dict) -> ErrorSpec | None:
        keys = {k for k in (headers.get(b"x-api-key"), headers.get(b"api-key")) if k is not None}
        bearer = headers.get(b"authorization")
        if keys and bearer is not None:
            return _BOTH
        if keys:
            if len(keys) > 1 or b"" in keys or (self._api_key is not None and keys != {self._api_key}):
                return _BAD_KEY
        elif bearer is not None:
            if not bearer.startswith(b"Bearer ") or len(bearer) <= 7:
                return _BAD_TOKEN
            if self._entra is not None and bearer != self._entra:
                return _BAD_TOKEN
        else:
            return _NO_CREDENTIALS
        if b"anthropic-version" not in headers:
            return ErrorSpec(400, "anthropic-version: header is required", "invalid_request_error")
        return None

    def error_payload(self, err: ErrorSpec) -> dict:
        if err.type == _AZURE:
            return {"error": {"code": err.code, "message": err.message}}
        return super().error_payload(err)
