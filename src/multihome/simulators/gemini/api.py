"""The ``gemini`` (Gemini API, ``x-goog-api-key``) and ``vertex`` (Vertex AI, OAuth bearer) kinds.

Both take the API key as ``?key=`` too; Vertex AI also takes one in express mode (no project or
location in the path). Field names are read in either of Google's spellings (names.py).

Routes, auth, Google error bodies (``{"error":{"code","message","status","details"}}``) and
``alt=sse`` framing (``data: {...}\\r\\n\\r\\n``, no end sentinel) follow Google's wire format; the
reply content comes from the shared planner, so every kind answers by the same rules.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec

from ..app import CHAT, EMBEDDINGS, INFERENCE, ProviderApp, Reply, Route, frame
from ..chat import CONTENT, BadRequest, plan_chat
from ..content import embedding, estimate_tokens
from ..errors import ErrorSpec
from ..faults import Fault
from ..http import status_line
from .convert import GEMINI_MAX_STOP, prompt_blocked, render_response, stream_chunks, to_openai
from .names import camel_keys
from .thinking import check_signatures, thinking_of

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


def location_mismatch(field: str, served: str) -> str:
    """Vertex AI's words for a path whose location is not the regional endpoint's (observed,
    googleapis/python-aiplatform#1684; `field` is the request's resource field)."""
    detail = f"The provided location ID doesn't match the endpoint. The valid location ID is `{served}`."
    return f"List of found errors:\t1.Field: {field}; Message: {detail}\t"


_GOOGLE_LOCATION = re.compile(r"[a-z]+-[a-z]+[0-9]+|global|us|eu")
_EVENT_END = b"\r\n\r\n"  # Google frames each SSE event with CRLF line endings


COUNT_TOKENS = "count_tokens"  # `:countTokens`: no reply planned, only the prompt measured
# Gemini embedding models on Vertex AI take one instance per `:predict` request (docs/translation/gemini.md).
ONE_INSTANCE_PREFIX = "gemini-embedding"
MAX_PREDICT_INSTANCES = 250  # the text-embedding models' limit per :predict (Google's embeddings docs)


class GeminiRoute(Route):
    __slots__ = ("stream", "sse", "verb")

    def __init__(self, op, deployment=None, error=None, stream=False, sse=False, verb=b""):
        super().__init__(op, deployment, None, error)
        self.stream = stream
        self.sse = sse
        self.verb = verb


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
            b"countTokens": COUNT_TOKENS,
            b"embedContent": EMBEDDINGS,
            b"batchEmbedContents": EMBEDDINGS,
        }
        if self.vertex:
            self._methods[b"predict"] = EMBEDDINGS

    def handle(self, conn, req):
        """`?key=` is Google's other way to pass an API key: read it as the header it stands for."""
        path, _, query = req.url.partition(b"?")
        if b"key=" in query and b"x-goog-api-key" not in req.headers and not path.startswith(b"/_sim/"):
            key = parse_qs(query.decode("latin-1")).get("key")
            if key:
                req.headers[b"x-goog-api-key"] = key[0].encode("latin-1")
        return super().handle(conn, req)

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
            # /v1/projects/{p}/locations/{l}/publishers/google/models/{m}, or in express mode (an API
            # key, no project) /v1/publishers/google/models/{m}
            segs = resource.split(b"/")
            if len(segs) == 6:
                segs = [*segs[:2], b"projects", b"", b"locations", b"", *segs[2:]]
            ok = (
                len(segs) == 10
                and segs[1] in (b"v1", b"v1beta1")
                and segs[2] == b"projects"
                and segs[4] == b"locations"
                and segs[6:9] == [b"publishers", b"google", b"models"]
            )
            model = segs[9] if ok else b""
            location = unquote(segs[5].decode("latin-1")) if ok else ""
            served = self.config.region
            if location and _GOOGLE_LOCATION.fullmatch(served) and location != served:
                # A regional endpoint serves its own location only (a simulator left at the default,
                # non-Google region serves any).
                error = ErrorSpec(400, location_mismatch("model", served), code="INVALID_ARGUMENT")
                return GeminiRoute(None, error=error)
        else:
            ok = resource.startswith((b"/v1beta/models/", b"/v1/models/"))
            model = resource.split(b"/models/", 1)[1] if ok else b""
        if op is None or not model:
            return not_found
        q = parse_qs(query.decode("latin-1")) if query else {}
        stream = verb == b"streamGenerateContent"
        sse = q.get("alt", [""])[0] == "sse"
        return GeminiRoute(op, unquote(model.decode("latin-1")), stream=stream, sse=sse, verb=verb)

    # -- auth ------------------------------------------------------------------------------
    def auth_error(self, headers: dict) -> ErrorSpec | None:
        if self.vertex and (b"x-goog-api-key" not in headers or b"authorization" in headers):
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
        if route.op in INFERENCE or route.op == COUNT_TOKENS:
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
            if b"_" in req.body:  # some field may be spelled snake_case (a cheap test: most bodies have none)
                body = camel_keys(body)
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
        if op == COUNT_TOKENS:
            return self._json_reply(req, self._count_tokens(body, model, reported), None)
        if op == EMBEDDINGS:
            reply = self._json_reply(req, self._embeddings(body, model, route.verb), None)
            if fault is None:
                self._remember(req, model, False, reply.payload)
            return reply
        chat = to_openai(body)
        check_signatures(body["contents"], model)
        thinking = thinking_of(body, model, _last_user_text(chat["messages"]))
        plan = plan_chat(
            chat,
            sim_name=self.name,
            model=reported,
            key=req.url + b"\x00" + req.body,
            fault=fault,
            max_stop=GEMINI_MAX_STOP,
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
                return self._json_reply(req, [c for _, _, c in stream_chunks(plan, reported, thinking)], None)
            chunks = [(stage == CONTENT, c) for stage, _, c in stream_chunks(plan, reported, thinking)]
            reply = Reply("stream", plan=plan, headers=self._sse_headers(req, None), events=iter(chunks))
            if fault is None and req.http_11:
                reply = Reply("response", self._sse_whole(req, [c for _, c in chunks]))
                self._remember(req, model, True, reply.payload)
            return reply
        reply = self._json_reply(req, render_response(plan, reported, thinking), None)
        if fault is None:
            self._remember(req, model, False, reply.payload)
        return reply

    def _count_tokens(self, body: dict, model: str, reported: str) -> dict:
        """`:countTokens`: the prompt's tokens as generateContent would report them in promptTokenCount."""
        inner = body.get("generateContentRequest")  # the Gemini API's other form: a whole request
        request = inner if isinstance(inner, dict) else {k: v for k, v in body.items() if k != "model"}
        plan = plan_chat(to_openai(request), sim_name=self.name, model=reported, key=b"", max_stop=GEMINI_MAX_STOP)
        out: dict[str, Any] = {
            "totalTokens": plan.prompt_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": plan.prompt_tokens}],
        }
        if self.vertex:
            texts = [m["content"] for m in to_openai(request)["messages"] if isinstance(m.get("content"), str)]
            out["totalBillableCharacters"] = sum(len(t) for t in texts)
        return out

    def _embeddings(self, body: dict, model: str, verb: bytes) -> dict:
        if verb == b"predict":
            return self._predict(body, model)
        if verb == b"embedContent":
            text, dims = self._embed_one(body, model, "EmbedContentRequest", require_model=False)
            tokens = estimate_tokens(text)
            out: dict[str, Any] = {"embedding": {"values": embedding(text.encode(), dims)}}
            if self.vertex:
                out["usageMetadata"] = {"promptTokenCount": tokens, "totalTokenCount": tokens}
                out["truncated"] = False
            return out
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise BadRequest("* BatchEmbedContentsRequest.requests: must not be empty.", code="INVALID_ARGUMENT")
        vectors = []
        tokens = 0
        for i, r in enumerate(requests):
            where = f"BatchEmbedContentsRequest.requests[{i}]"
            # The Gemini API names the model in every request; Vertex AI takes it from the URL.
            text, dims = self._embed_one(r, model, where, require_model=not self.vertex)
            tokens += estimate_tokens(text)
            vectors.append({"values": embedding(text.encode(), dims)})
        batch: dict[str, Any] = {"embeddings": vectors}
        if self.vertex:
            batch["usageMetadata"] = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        return batch

    def _embed_one(self, r: Any, model: str, where: str, *, require_model: bool) -> tuple[str, int]:
        """(text, dimensions) of one EmbedContentRequest; the model, when named, must be the URL's."""
        if not isinstance(r, dict):
            raise BadRequest(f"* {where}: must be an object.", code="INVALID_ARGUMENT")
        named = r.get("model")
        if (require_model or named is not None) and named not in (f"models/{model}", model):
            raise BadRequest(
                f"* {where}.model: the model must be models/{model}, the model of the URL.", code="INVALID_ARGUMENT"
            )
        parts = (r.get("content") or {}).get("parts") if isinstance(r.get("content"), dict) else None
        if not isinstance(parts, list) or not parts:
            raise BadRequest(f"* {where}.content: contents is not specified", code="INVALID_ARGUMENT")
        text = " ".join(p.get("text", "") for p in parts if isinstance(p, dict))
        config = r.get("embedContentConfig")  # Vertex AI's nesting of the options
        dims_value = r.get("outputDimensionality")
        if dims_value is None and isinstance(config, dict):
            dims_value = config.get("outputDimensionality")
        dims = _dimensions(dims_value, self.config.embedding_dimensions, f"{where}.output_dimensionality")
        return text, dims

    def _predict(self, body: dict, model: str) -> dict:
        """Vertex AI `:predict` for text embedding models."""
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise BadRequest("* instances: must be a non-empty list.", code="INVALID_ARGUMENT")
        allowed = 1 if model.startswith(ONE_INSTANCE_PREFIX) else MAX_PREDICT_INSTANCES
        if len(instances) > allowed:
            # Vertex AI's words for too many instances (observed: langchain-ai/langchain#5316).
            raise BadRequest(
                f"{allowed} instance(s) is allowed per prediction. Actual: {len(instances)}", code="INVALID_ARGUMENT"
            )
        params = body.get("parameters") or {}
        dims = _dimensions(
            params.get("outputDimensionality"), self.config.embedding_dimensions, "parameters.outputDimensionality"
        )
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

    # -- SSE -------------------------------------------------------------------------------
    def _sse_whole(self, req, chunks: list[dict]) -> bytes:
        parts = [status_line(200), self._sse_headers(req, None), b"transfer-encoding: chunked\r\n\r\n"]
        for chunk in chunks:
            parts.append(frame(b"data: " + _encode(chunk) + _EVENT_END))
        parts.append(b"0\r\n\r\n")
        return b"".join(parts)

    stream_end = b""  # Google's alt=sse streams have no sentinel

    def _frames(self, reply: Reply, fault: Fault | None):
        """Paced `alt=sse` chunks (rendered by _prepare, thoughts included) with Google's CRLF event framing."""
        assert reply.events is not None  # this app's stream replies carry their chunks
        return ((content, b"data: " + _encode(chunk) + _EVENT_END) for content, chunk in reply.events)

    def _stream_end(self, reply: Reply) -> bytes:
        return b""

    def malformed_frame(self, good: bytes) -> bytes:
        return b"data: {not json" + _EVENT_END + good


def _last_user_text(messages: list[dict]) -> str:
    """The last user message's text, for the simulated thought summary to quote."""
    for m in reversed(messages):
        if m["role"] == "user":
            content = m["content"]
            return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
    return ""


MAX_OUTPUT_DIMENSIONALITY = 3072  # Google's largest embedding size (gemini-embedding-001)


def _dimensions(value, default: int, where: str) -> int:
    """outputDimensionality as Google checks it: absent means the model's size; otherwise an
    integer from 1 to the model's size (a huge one must be refused, not computed). 0 is proto3's unset."""
    if value is None or value == 0 and not isinstance(value, bool):
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_DIMENSIONALITY:
        raise BadRequest(f"* {where}: must be between 1 and {MAX_OUTPUT_DIMENSIONALITY}.", code="INVALID_ARGUMENT")
    return value
