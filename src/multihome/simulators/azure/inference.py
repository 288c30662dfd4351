"""The ``azure_inference`` kind: the Azure AI model inference API that serves Microsoft Foundry's
model catalogue (Llama, Mistral, DeepSeek...): ``POST /models/chat/completions`` and
``/models/embeddings`` on a Foundry resource, or the same calls at the root of a serverless
endpoint, ``api-version`` required, the model named by the body's ``model`` (the deployment).

Auth as the service takes it: the key in ``api-key`` and/or as ``Authorization: Bearer`` (the
azure-ai-inference SDK sends both), or an Entra ID bearer token. Parameters the API does not list
follow the ``extra-parameters`` header: ``error`` (the default) refuses them with 422, ``drop``
removes them, ``pass-through`` hands them to the model. Replies, content-filter extras and the
anonymous first stream chunk are Azure OpenAI's (the same content safety runs in front).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from ..app import CHAT, EMBEDDINGS, Reply, Route
from ..errors import ErrorSpec
from ..faults import Fault
from ..http import Request
from .api import BAD_KEY, BAD_TOKEN, NO_CREDENTIALS, AzureApp

_OPS = {b"/chat/completions": CHAT, b"/embeddings": EMBEDDINGS}
# ChatCompletionsOptions and EmbeddingsOptions of api-version 2024-05-01-preview.
_KNOWN = {
    CHAT: frozenset(
        {
            "messages",
            "model",
            "frequency_penalty",
            "presence_penalty",
            "temperature",
            "top_p",
            "max_tokens",
            "response_format",
            "stop",
            "stream",
            "tools",
            "tool_choice",
            "seed",
        }
    ),
    EMBEDDINGS: frozenset({"input", "model", "dimensions", "encoding_format", "input_type"}),
}
_NOT_FOUND = ErrorSpec(404, "Resource not found", None, "404")


class AzureInferenceApp(AzureApp):
    kind = "azure_inference"

    def route(self, method: bytes, path: bytes, query: bytes) -> Route:
        api_version = parse_qs(query.decode("latin-1")).get("api-version", [None])[0] if query else None
        op = _OPS.get(path.removeprefix(b"/models")) if method == b"POST" else None
        if op is None:
            return Route(None, api_version=api_version, error=_NOT_FOUND)
        if api_version is None:
            return Route(
                op,
                api_version=None,
                error=ErrorSpec(
                    400, "Missing required query parameter: api-version", None, "MissingApiVersionParameter"
                ),
            )
        return Route(op, None, api_version)

    def auth_error(self, headers: dict) -> ErrorSpec | None:
        key = headers.get(b"api-key")
        bearer = headers.get(b"authorization")
        if key is None and bearer is None:
            return NO_CREDENTIALS
        if key is not None and (not key or (self._api_key is not None and key != self._api_key)):
            return BAD_KEY
        if bearer is not None:
            token = bearer[7:] if bearer.startswith(b"Bearer ") else b""
            # A serverless endpoint takes its key as a bearer token; a resource takes an Entra ID token.
            accepted = {t for t in (self._api_key, self._entra and self._entra[7:]) if t}
            if not token or (accepted and token not in accepted):
                return BAD_TOKEN
        return None

    def unknown_model(self, name: str) -> ErrorSpec:
        return ErrorSpec(400, f"Unknown model: {name}", None, "unknown_model")

    def _remember(self, req: Request, model: str | None, stream: bool, payload: bytes) -> None:
        # The reply cache is keyed by URL and body; a reply that `extra-parameters` allowed must not
        # answer the same body sent later without the header (which is refused).
        if b"extra-parameters" not in req.headers:
            super()._remember(req, model, stream, payload)

    def _prepare(self, req: Request, route: Route, body: Any, model: str | None, fault: Fault | None) -> Reply:
        if route.op in _KNOWN and isinstance(body, dict):
            extra = sorted(set(body) - _KNOWN[route.op])
            mode = req.headers.get(b"extra-parameters", b"error")
            if extra and mode == b"drop":
                body = {k: v for k, v in body.items() if k not in extra}
            elif extra and mode != b"pass-through":
                message = (
                    f"Extra parameters {extra} are not allowed when the extra-parameters header is missing or "
                    "'error'. Set it to 'pass-through' to hand them to the model, or 'drop' to ignore them."
                )
                return self._error_reply(ErrorSpec(422, message, None, "extra_parameters_not_allowed"), None)
        return super()._prepare(req, route, body, model, fault)
