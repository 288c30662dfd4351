"""The ``bedrock_openai`` kind: Amazon Bedrock's OpenAI-compatible Chat Completions endpoint,
``POST /openai/v1/chat/completions`` on the Bedrock Runtime host, serving OpenAI's open-weight
models (``openai.gpt-oss-20b-1:0``, ``openai.gpt-oss-120b-1:0``).

Bodies, answers and SSE streams are OpenAI's (the ``openai`` app's); what is Bedrock's is who may
call: a Bedrock API key as ``Authorization: Bearer`` (``--api-key-env``) or a SigV4 signature for
service ``bedrock`` in the served region (checked as the ``bedrock`` kind checks it). AWS documents
no other OpenAI operation on this endpoint, so everything else is a 404. Refusals use OpenAI's
error envelope, which is what the openai SDK pointed here reads, with Bedrock's code: a request it
cannot take is `{"error": {"code": "validation_error", "message", "type": "invalid_request_error"}}`
(observed on Bedrock's OpenAI-compatible endpoints: vercel/ai#11467, mastra-ai/mastra#19228).
"""

from __future__ import annotations

from typing import Any

from ..app import CHAT, Reply, Route
from ..chat import BadRequest
from ..config import SimulatorConfig
from ..errors import ErrorSpec
from ..faults import Fault
from ..http import Connection, Request
from ..openai.api import OpenAIApp
from ..state import SimState
from .sigv4 import started_credentials, verify_request

_PATH = b"/openai/v1/chat/completions"


class BedrockOpenAIApp(OpenAIApp):
    kind = "bedrock_openai"
    auth_headers = (b"authorization",)

    def __init__(self, config: SimulatorConfig, state: SimState) -> None:
        super().__init__(config, state)
        self.region = config.region
        self.keys, self._bearer = started_credentials(
            config.aws_access_key_id, config.aws_secret_access_key, config.api_key
        )
        self._req: Request | None = None

    def handle(self, conn: Connection, req: Request):
        self._req = req  # SigV4 signs the whole request: auth_error reads it (called synchronously)
        try:
            return super().handle(conn, req)
        finally:
            self._req = None

    def route(self, method: bytes, path: bytes, query: bytes) -> Route:
        if method == b"POST" and path == _PATH:
            return Route(CHAT)
        return Route(None, error=ErrorSpec(404, f"Unsupported operation: {method.decode()} {path.decode('latin-1')}"))

    def auth_error(self, headers: dict) -> ErrorSpec | None:
        auth = headers.get(b"authorization")
        if auth is None:
            return ErrorSpec(403, "Missing Authentication Token", "invalid_request_error", "access_denied")
        if auth.startswith(b"Bearer "):
            if self._bearer is None or auth == self._bearer:
                return None
            return ErrorSpec(403, "Invalid API Key format: Must start with pre-defined prefix", code="access_denied")
        if not self.keys:
            return None
        req = self._req
        assert req is not None  # handle() sets it around the shared pipeline
        failure = verify_request(req, self.keys, self.region)
        if failure is None:
            return None
        return ErrorSpec(failure.status, failure.message, "invalid_request_error", failure.error_type)

    def bad_request(self, e: BadRequest) -> ErrorSpec:
        return ErrorSpec(e.status, e.message, "invalid_request_error", "validation_error", e.param)

    def _prepare(self, req: Request, route: Route, body: Any, model: str | None, fault: Fault | None) -> Reply:
        # OpenAI's open-weight models on Bedrock take text only (AWS's model card: input modality Text).
        for i, message in enumerate(body.get("messages") or () if isinstance(body, dict) else ()):
            content = message.get("content") if isinstance(message, dict) else None
            for part in content if isinstance(content, list) else ():
                if isinstance(part, dict) and part.get("type") not in ("text", None):
                    raise BadRequest(
                        f"messages[{i}]: content type '{part.get('type')}' is not supported by this model (text only).",
                        f"messages[{i}].content",
                        "invalid_value",
                    )
        return super()._prepare(req, route, body, model, fault)

    def response_headers(self, rid: str, deployment: str | None) -> bytes:
        return b"x-amzn-RequestId: %s\r\n" % rid.encode()
