"""The ``openai`` kind: OpenAI's own API and OpenAI-compatible servers (vLLM, Ollama, ...)."""

from __future__ import annotations

from urllib.parse import unquote

from ..app import CHAT, EMBEDDINGS, MODEL, MODELS, RESPONSES, ProviderApp, Route
from ..errors import ErrorSpec
from ..faults import Fault


class OpenAIApp(ProviderApp):
    kind = "openai"
    auth_headers = (b"authorization",)

    def __init__(self, config, state):
        super().__init__(config, state)
        self._expected_auth = b"Bearer " + config.api_key.encode() if config.api_key else None
        # Static part of every reply's headers: computed once.
        self._static_headers = (
            b"openai-version: 2020-10-01\r\nopenai-processing-ms: 1\r\n"
            b"x-ratelimit-limit-requests: 10000\r\nx-ratelimit-remaining-requests: 9999\r\n"
            b"x-ratelimit-limit-tokens: 10000000\r\nx-ratelimit-remaining-tokens: 9999000\r\n"
            b"x-ratelimit-reset-requests: 6ms\r\nx-ratelimit-reset-tokens: 0s\r\n"
        )

    def route(self, method: bytes, path: bytes, query: bytes) -> Route:
        if method == b"POST":
            if path == b"/v1/chat/completions":
                return Route(CHAT)
            if path == b"/v1/embeddings":
                return Route(EMBEDDINGS)
            if path == b"/v1/responses":
                return Route(RESPONSES)
        elif method == b"GET":
            if path == b"/v1/models":
                return Route(MODELS)
            if path.startswith(b"/v1/models/") and len(path) > len(b"/v1/models/"):
                # Model ids may contain '/' (e.g. "meta-llama/Llama-3.1-8B"): take the rest.
                return Route(MODEL, unquote(path[len(b"/v1/models/") :].decode("latin-1")))
        return Route(None, error=ErrorSpec(404, f"Invalid URL ({method.decode()} {path.decode('latin-1')})"))

    def auth_error(self, headers: dict) -> ErrorSpec | None:
        expected = self._expected_auth
        if expected is None or headers.get(b"authorization") == expected:
            return None
        if b"authorization" not in headers:
            msg = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            msg = (
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
            )
        return ErrorSpec(401, msg, "invalid_request_error", "invalid_api_key")

    def error_payload(self, err: ErrorSpec) -> dict:
        return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}

    def response_headers(self, rid: str, deployment: str | None) -> bytes:
        return b"x-request-id: %s\r\n%s" % (rid.encode(), self._static_headers)

    def unknown_model(self, name: str) -> ErrorSpec:
        return ErrorSpec(
            404,
            f"The model `{name}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        )

    def content_filter_prompt(self) -> bytes:
        return (
            b'{"error":{"message":"Your request was rejected as a result of our safety system. Your prompt may '
            b'contain text that is not allowed by our safety system.","type":"invalid_request_error",'
            b'"param":"prompt","code":"content_filter"}}'
        )

    def completion_extra(self, plan, fault: Fault | None) -> dict:
        return {"service_tier": "default"}
