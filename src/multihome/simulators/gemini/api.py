"""The ``gemini`` (Gemini API, ``x-goog-api-key``) and ``vertex`` (Vertex AI, OAuth bearer) kinds.

Routes, auth, Google error bodies (``{"error":{"code","message","status","details"}}``) and
``alt=sse`` framing (``data: {...}\\r\\n\\r\\n``, no end sentinel) follow Google's wire format; the
reply content comes from the shared planner, so every kind answers by the same rules.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec

from ..app import CHAT, EMBEDDINGS, INFERENCE, ProviderApp, Reply, Route, frame
from ..chat import CONTENT, BadRequest, plan_chat
from ..content import embedding, estimate_tokens
from ..errors import ErrorSpec
from ..faults import Fault
from ..http import status_line
from .convert import prompt_blocked, render_response, stream_chunks, to_openai

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}
# Google's words for a missing and for an unknown OAuth token (Vertex AI; Claude on Vertex too).
MISSING_TOKEN = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential."
)
BAD_TOKEN = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential."
)
_EVENT_END = b"\r\n\r\n"  # Google frames each SSE event with CRLF line endings


class GeminiRoute(Route):
    __slots__ = ("stream", "sse")

    def __init__(self, op, deployment=None, error=None, stream=False, sse=False):
        super().__init__(op, deployment, None, error)
        self.stream = stream
        self.sse = sse


def google_status(status: int) -> str:
    return _STATUS.get(status) or ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION")


class GeminiApp(ProviderApp):
    auth_headers = (b"x-goog-api-key", b"authorization")

    def __init__(self, config, state):
        super().__init__(config, state)
        self.kind = config.kind  # "gemini" or "vertex"
        self.vertex = config.kind == "vertex"
        self._api_key = config.api_key.encode() if config.api_key else None
        self._bearer = b"Bearer " + config.oauth_token.encode() if config.oauth_token else None
        self._methods = {
            b"generateContent": CHAT,
            b"streamGenerateContent": CHAT,
            (b"predict" if self.vertex else b"batchEmbedContents"): EMBEDDINGS,
        }

    # -- routing ---------------------------------------------------------------------------
    def route(self, method: bytes, path: bytes, query: bytes) -> Route:
        not_found = GeminiRoute(
            None,
            error=ErrorSpec(
                404, f"The requested URL {path.decode('latin-1')} was not found on this server.", code="NOT_FOUND"
            ),
        )
        if method != b"POST" or b":" not in path:
            return not_found
        resource, _, verb = path.rpartition(b":")
        op = self._methods.get(verb)
        if self.vertex:
            # /v1/projects/{p}/locations/{l}/publishers/google/models/{m}
            segs = resource.split(b"/")
            ok = (
                len(segs) == 10
                and segs[1] in (b"v1", b"v1beta1")
                and segs[2] == b"projects"
                and segs[4] == b"locations"
                and segs[6:9] == [b"publishers", b"google", b"models"]
            )
            model = segs[9] if ok else b""
        else:
            ok = resource.startswith((b"/v1beta/models/", b"/v1/models/"))
            model = resource.split(b"/models/", 1)[1] if ok else b""
        if op is None or not model:
            return not_found
        q = parse_qs(query.decode("latin-1")) if query else {}
        stream = verb == b"streamGenerateContent"
        return GeminiRoute(op, unquote(model.decode("latin-1")), stream=stream, sse=q.get("alt", [""])[0] == "sse")

    # -- auth ------------------------------------------------------------------------------
    def auth_error(self, headers: dict) -> ErrorSpec | None:
        if self.vertex:
            bearer = headers.get(b"authorization")
            if bearer is None or not bearer.startswith(b"Bearer ") or len(bearer) <= 7:
                return ErrorSpec(401, MISSING_TOKEN, code="UNAUTHENTICATED")
            if self._bearer is not None and bearer != self._bearer:
                return ErrorSpec(401, BAD_TOKEN, code="UNAUTHENTICATED")
            return None
        key = headers.get(b"x-goog-api-key")
        if key is None:
            if self._api_key is None:
                return None
            return ErrorSpec(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
                code="PERMISSION_DENIED",
            )
        if self._api_key is not None and key != self._api_key:
            # Google answers a wrong key with 400, not 401.
            return ErrorSpec(
                400, "API key not valid. Please pass a valid API key.", code="INVALID_ARGUMENT", param="API_KEY_INVALID"
            )
        return None

    # -- shapes ----------------------------------------------------------------------------
    def error_payload(self, err: ErrorSpec) -> dict:
        code = err.code if err.code and err.code.isupper() else google_status(err.status)
        body: dict[str, Any] = {"code": err.status, "message": err.message, "status": code}
        if err.param == "API_KEY_INVALID":
            body["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            ]
        elif err.status == 429:
            delay = err.param or "1s"
            body["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                        }
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
            ]
        return {"error": body}

    def response_headers(self, rid: str, deployment: str | None) -> bytes:
        return (
            b"vary: Origin, X-Origin, Referer\r\nserver: scaffolding on HTTPServer2\r\nx-sim-request-id: %s\r\n"
            % rid.encode()
        )

    def unknown_model(self, name: str) -> ErrorSpec:
        where = "publishers/google/models" if self.vertex else "models"
        return ErrorSpec(
            404,
            f"{where}/{name} is not found for API version v1beta, or is not supported for "
            "generateContent. Call ListModels to see the list of available models and their supported methods.",
            code="NOT_FOUND",
        )

    # -- pipeline (Google bodies instead of OpenAI's) --------------------------------------
    def _slow(self, conn, req, route: Route, entry, fault: Any):
        assert isinstance(route, GeminiRoute)  # this app's route() makes only these
        body: Any = None
        model = route.deployment
        entry.model = model
        entry.stream = route.stream
        if route.op in INFERENCE:
            try:
                body = _decode(req.body)
            except msgspec.DecodeError:
                return self._send_error(
                    conn,
                    req,
                    entry,
                    ErrorSpec(400, "Invalid JSON payload received. Unexpected token.", code="INVALID_ARGUMENT"),
                )
            if not isinstance(body, dict):
                return self._send_error(
                    conn,
                    req,
                    entry,
                    ErrorSpec(400, "Invalid JSON payload received. Expected an object.", code="INVALID_ARGUMENT"),
                )
        return self._answer(conn, req, route, entry, body, model, fault)

    def bad_request(self, e: BadRequest) -> ErrorSpec:
        return ErrorSpec(e.status, e.message, code=e.code if e.code and e.code.isupper() else None)

    def _prepare(self, req, route: Route, body: Any, model: str | None, fault: Fault | None) -> Reply:
        assert isinstance(route, GeminiRoute) and model is not None  # every route that gets here names a model
        op = route.op
        if fault is not None:
            if fault.hang:
                return Reply("hang")
            if fault.throttle is not None:
                err = ErrorSpec(429, _MESSAGES[429], code="RESOURCE_EXHAUSTED", param=f"{fault.throttle:g}s")
                return self._error_reply(err, None)
            if fault.status is not None and fault.status >= 400:
                status = fault.status
                message = _MESSAGES.get(status, "Simulated error.")
                if fault.error_code == "context_length_exceeded":  # Google's words for an over-long prompt
                    message = "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
                return self._error_reply(ErrorSpec(status, message, code=google_status(status)), None)
            if fault.cut_after is not None and not route.stream:
                return Reply("cut")
        if self.models is not None and model not in self.models:
            return self._error_reply(self.unknown_model(model), None)
        reported = self.models[model] if self.models is not None else model
        if op == EMBEDDINGS:
            reply = self._json_reply(req, self._embeddings(body, model), None)
            if fault is None:
                self._remember(req, model, False, reply.payload)
            return reply
        plan = plan_chat(
            to_openai(body), sim_name=self.name, model=reported, key=req.url + b"\x00" + req.body, fault=fault
        )
        if fault is not None and fault.content_filter == "prompt":
            # Google blocks a prompt with a 200 that has promptFeedback.blockReason and no candidates.
            blocked = prompt_blocked(plan, reported)
            if route.stream:
                return Reply("response", self._sse_whole(req, [blocked]))
            return self._json_reply(req, blocked, None)
        if route.stream:
            if not route.sse:
                # Without alt=sse Google streams one JSON array of chunks.
                return self._json_reply(req, [c for _, _, c in stream_chunks(plan, reported)], None)
            reply = Reply("stream", plan=plan, headers=self._sse_headers(req, None))
            if fault is None and req.http_11:
                reply = Reply("response", self._sse_whole(req, [c for _, _, c in stream_chunks(plan, reported)]))
                self._remember(req, model, True, reply.payload)
            return reply
        reply = self._json_reply(req, render_response(plan, reported), None)
        if fault is None:
            self._remember(req, model, False, reply.payload)
        return reply

    def _embeddings(self, body: dict, model: str) -> dict:
        dims_default = self.config.embedding_dimensions
        if self.vertex:
            instances = body.get("instances")
            if not isinstance(instances, list) or not instances:
                raise BadRequest("* instances: must be a non-empty list.", code="INVALID_ARGUMENT")
            params = body.get("parameters") or {}
            dims = _dimensions(params.get("outputDimensionality"), dims_default, "parameters.outputDimensionality")
            preds = []
            for inst in instances:
                text = inst.get("content") if isinstance(inst, dict) else None
                if not isinstance(text, str) or not text:
                    raise BadRequest("* instances[].content: a non-empty string is required.", code="INVALID_ARGUMENT")
                preds.append(
                    {
                        "embeddings": {
                            "values": embedding(text.encode(), dims),
                            "statistics": {"truncated": False, "token_count": estimate_tokens(text)},
                        }
                    }
                )
            chars = sum(len(i["content"]) for i in instances)
            return {"predictions": preds, "metadata": {"billableCharacterCount": chars}}
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise BadRequest("* BatchEmbedContentsRequest.requests: must not be empty.", code="INVALID_ARGUMENT")
        out = []
        for i, r in enumerate(requests):
            if not isinstance(r, dict) or r.get("model") != f"models/{model}":
                raise BadRequest(
                    f"* BatchEmbedContentsRequest.requests[{i}].model: the model must be models/{model}, "
                    "the model of the URL.",
                    code="INVALID_ARGUMENT",
                )
            parts = (r.get("content") or {}).get("parts")
            if not isinstance(parts, list) or not parts:
                raise BadRequest(
                    f"* BatchEmbedContentsRequest.requests[{i}].content: contents is not specified",
                    code="INVALID_ARGUMENT",
                )
            text = " ".join(p.get("text", "") for p in parts if isinstance(p, dict))
            dims = _dimensions(
                r.get("outputDimensionality"),
                dims_default,
                f"BatchEmbedContentsRequest.requests[{i}].output_dimensionality",
            )
            out.append({"values": embedding(text.encode(), dims)})
        return {"embeddings": out}

    # -- SSE -------------------------------------------------------------------------------
    def _sse_whole(self, req, chunks: list[dict]) -> bytes:
        parts = [status_line(200), self._sse_headers(req, None), b"transfer-encoding: chunked\r\n\r\n"]
        for chunk in chunks:
            parts.append(frame(b"data: " + _encode(chunk) + _EVENT_END))
        parts.append(b"0\r\n\r\n")
        return b"".join(parts)

    stream_end = b""  # Google's alt=sse streams have no sentinel

    def stream_frames(self, reply: Reply, fault: Fault | None):
        """Paced `alt=sse` chunks with Google's CRLF event framing."""
        plan = reply.stream_plan()
        for stage, _, chunk in stream_chunks(plan, plan.model):
            yield stage == CONTENT, b"data: " + _encode(chunk) + _EVENT_END

    def malformed_frame(self, good: bytes) -> bytes:
        return b"data: {not json" + _EVENT_END + good


MAX_OUTPUT_DIMENSIONALITY = 3072  # Google's largest embedding size (gemini-embedding-001)


def _dimensions(value, default: int, where: str) -> int:
    """outputDimensionality as Google checks it: absent means the model's size; otherwise an
    integer from 1 to the model's size (a huge one must be refused, not computed). 0 is proto3's unset."""
    if value is None or value == 0 and not isinstance(value, bool):
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_DIMENSIONALITY:
        raise BadRequest(f"* {where}: must be between 1 and {MAX_OUTPUT_DIMENSIONALITY}.", code="INVALID_ARGUMENT")
    return value
