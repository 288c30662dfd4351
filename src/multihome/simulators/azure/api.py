"""The ``azure`` kind: Azure OpenAI, classic (``/openai/deployments/{d}/...?api-version=``) and
v1 (``/openai/v1/...``) URL forms, api-key or Entra bearer auth, content-filter extras and the
empty first stream chunk that real Azure sends."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote

import msgspec

from ..app import CHAT, EMBEDDINGS, MODEL, MODELS, RESPONSES, ProviderApp, Route, safe_header_value
from ..chat import CONTENT, FINAL, ChatPlan, stream_chunks
from ..errors import ErrorSpec
from ..faults import Fault

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_CLASSIC_OPS = {b"chat/completions": CHAT, b"embeddings": EMBEDDINGS}
_V1_OPS = {
    b"/openai/v1/chat/completions": CHAT,
    b"/openai/v1/embeddings": EMBEDDINGS,
    b"/openai/v1/responses": RESPONSES,
}

_SAFE = {"filtered": False, "severity": "safe"}
PROMPT_FILTER_SAFE = {
    "hate": _SAFE,
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
CHOICE_FILTER_SAFE = {
    "hate": _SAFE,
    "protected_material_code": {"filtered": False, "detected": False},
    "protected_material_text": {"filtered": False, "detected": False},
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
# The output-filter fault pretends the model's output hit the violence category.
CHOICE_FILTER_HIT = {**CHOICE_FILTER_SAFE, "violence": {"filtered": True, "severity": "medium"}}
PROMPT_FILTER_HIT = {**PROMPT_FILTER_SAFE, "violence": {"filtered": True, "severity": "high"}}
PROMPT_FILTER_RESULTS = [{"prompt_index": 0, "content_filter_results": PROMPT_FILTER_SAFE}]

_NOT_FOUND = ErrorSpec(404, "Resource not found", None, "404")
# What Azure's gateway answers for credentials it refuses (azure_inference's app shares them).
BAD_KEY = ErrorSpec(
    401,
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource.",
    None,
    "401",
)
BAD_TOKEN = ErrorSpec(
    401,
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), "
    "or have expired.",
    None,
    "PermissionDenied",
)
NO_CREDENTIALS = ErrorSpec(
    401,
    "Access denied due to missing subscription key or Authorization token. Make sure to include an api-key header "
    "or an Authorization bearer token.",
    None,
    "401",
)


def _uuid(hexstr: str) -> str:
    h = (hexstr * 2)[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class AzureApp(ProviderApp):
    kind = "azure"
    auth_headers = (b"api-key", b"authorization")

    def __init__(self, config, state):
        super().__init__(config, state)
        self._api_key = config.api_key.encode() if config.api_key else None
        self._entra = b"Bearer " + config.entra_token.encode() if config.entra_token else None
        self._static_headers = (
            b"x-ms-region: " + safe_header_value(config.region) + b"\r\n"
            b"x-ratelimit-remaining-requests: 999\r\nx-ratelimit-remaining-tokens: 99000\r\n"
        )

    # -- routing ---------------------------------------------------------------------------
    def route(self, method: bytes, path: bytes, query: bytes) -> Route:
        q = parse_qs(query.decode("latin-1")) if query else {}
        api_version = q.get("api-version", [None])[0]
        if method == b"POST" and path.startswith(b"/openai/deployments/"):
            deployment, _, rest = path[len(b"/openai/deployments/") :].partition(b"/")
            op = _CLASSIC_OPS.get(rest)
            if op is None or not deployment:
                return Route(None, api_version=api_version, error=_NOT_FOUND)
            if api_version is None:
                return Route(
                    op,
                    api_version=None,
                    error=ErrorSpec(
                        400,
                        "Missing required query parameter: api-version. Use e.g. ?api-version=2024-10-21.",
                        None,
                        "MissingApiVersionParameter",
                    ),
                )
            if not _API_VERSION.match(api_version):
                return Route(
                    op,
                    api_version=api_version,
                    error=ErrorSpec(
                        400,
                        f"Unsupported api-version {api_version!r}: expected YYYY-MM-DD or YYYY-MM-DD-preview.",
                        None,
                        "BadRequest",
                    ),
                )
            return Route(op, unquote(deployment.decode("latin-1")), api_version)
        if method == b"POST":
            op = _V1_OPS.get(path)
            if op is not None:
                return Route(op, None, api_version)
        elif method == b"GET":
            if path == b"/openai/v1/models" or path == b"/openai/models":
                return Route(MODELS, None, api_version)
            for prefix in (b"/openai/v1/models/", b"/openai/models/"):
                if path.startswith(prefix) and len(path) > len(prefix):
                    return Route(MODEL, unquote(path[len(prefix) :].decode("latin-1")), api_version)
        return Route(None, api_version=api_version, error=_NOT_FOUND)

    # -- auth ------------------------------------------------------------------------------
    def auth_error(self, headers: dict) -> ErrorSpec | None:
        key = headers.get(b"api-key")
        bearer = headers.get(b"authorization")
        if key is not None and bearer is not None:
            return ErrorSpec(
                401, "Provide exactly one of the api-key header or an Authorization bearer token.", None, "401"
            )
        if key is not None:
            if key and (self._api_key is None or key == self._api_key):
                return None
            return BAD_KEY
        if bearer is not None:
            token_ok = bearer.startswith(b"Bearer ") and len(bearer) > 7
            if token_ok and (self._entra is None or bearer == self._entra):
                return None
            return BAD_TOKEN
        return NO_CREDENTIALS

    # -- shapes ----------------------------------------------------------------------------
    def error_payload(self, err: ErrorSpec) -> dict:
        e: dict[str, str | None] = {"code": err.code or str(err.status), "message": err.message}
        if err.param is not None:  # request validation errors come from the model backend: OpenAI fields
            e["param"] = err.param
            e["type"] = err.type
        return {"error": e}

    def response_headers(self, rid: str, deployment: str | None) -> bytes:
        u = _uuid(rid[4:] if rid.startswith("req_") else rid).encode()
        out = b"apim-request-id: %s\r\nx-request-id: %s\r\n%s" % (u, u, self._static_headers)
        if deployment is not None:
            out += b"x-ms-deployment-name: " + safe_header_value(deployment) + b"\r\n"
        return out

    def throttle_headers(self, seconds: float) -> bytes:
        return super().throttle_headers(seconds) + b"x-ms-retry-after-ms: %d\r\n" % round(seconds * 1000)

    def unknown_model(self, name: str) -> ErrorSpec:
        return ErrorSpec(
            404,
            "The API deployment for this resource does not exist. If you created the deployment "
            "within the last 5 minutes, please wait a moment and try again.",
            None,
            "DeploymentNotFound",
        )

    def content_filter_prompt(self) -> bytes:
        return msgspec.json.encode(
            {
                "error": {
                    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
                    "policy. Please modify your prompt and retry. To learn more about our content filtering "
                    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
                    "type": None,
                    "param": "prompt",
                    "code": "content_filter",
                    "status": 400,
                    "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": PROMPT_FILTER_HIT},
                }
            }
        )

    # -- content-filter decoration ---------------------------------------------------------
    def decorate_completion(self, body: dict, plan: ChatPlan, fault: Fault | None) -> None:
        body["prompt_filter_results"] = PROMPT_FILTER_RESULTS
        for choice in body["choices"]:
            hit = choice["finish_reason"] == "content_filter"
            choice["content_filter_results"] = CHOICE_FILTER_HIT if hit else CHOICE_FILTER_SAFE

    def stream_events(self, plan: ChatPlan, fault: Fault | None) -> Iterator[tuple[str, int, dict]]:
        # Documented quirk: an anonymous first chunk that only carries the prompt filter results.
        yield (
            "prelude",
            -1,
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": PROMPT_FILTER_RESULTS,
            },
        )
        for stage, i, chunk in stream_chunks(plan, self.created, self.fingerprint):
            choices = chunk["choices"]
            if choices:
                c = choices[0]
                if stage == CONTENT:
                    c["content_filter_results"] = CHOICE_FILTER_SAFE
                elif stage == FINAL and c["finish_reason"] == "content_filter":
                    c["content_filter_results"] = CHOICE_FILTER_HIT
                else:
                    c["content_filter_results"] = {}
            yield stage, i, chunk
