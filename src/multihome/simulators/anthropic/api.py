"""The ``anthropic`` kind: Anthropic's Messages API (``POST /v1/messages``), x-api-key auth,
``anthropic-version`` required, Anthropic error envelopes and status codes (529 overloaded),
named SSE events, and deterministic prompt-cache usage for requests with ``cache_control``.

Shares ProviderApp's pipeline (routing cache, request log, fault knobs, /_sim/ routes); the
reply building and the stream writer are Anthropic's own."""

from __future__ import annotations

from typing import Any

from ..app import CHAT, MODEL, MODELS, ProviderApp, Reply, Route, frame
from ..chat import plan_chat
from ..config import SimulatorConfig
from ..content import short_hash
from ..errors import ErrorSpec, error_for_status
from ..faults import Fault
from ..http import Request, status_line
from ..state import SimState
from . import wire

# status -> Anthropic error type (protocols.md section 6).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_KNOWN_TYPES = frozenset(ERROR_TYPES.values())
_MESSAGES = {
    529: "Overloaded",
    500: "Internal server error",
    413: "Request exceeds the maximum allowed number of bytes.",
}
_PROMPT_CACHE_MAX = 4096
_MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]


class MessageReply(Reply):
    """A stream reply that renders an Anthropic message plan (the shared Reply carries a ChatPlan)."""

    __slots__ = ("message",)

    def __init__(self, message: wire.MessagePlan, headers: bytes) -> None:
        super().__init__("stream", headers=headers)
        self.message = message


def _message_plan(reply: Reply) -> wire.MessagePlan:
    assert isinstance(reply, MessageReply)  # this app's stream replies are all MessageReply
    return reply.message


class AnthropicApp(ProviderApp):
    kind = "anthropic"
    auth_headers: tuple[bytes, ...] = (b"x-api-key", b"authorization")

    def __init__(self, config: SimulatorConfig, state: SimState) -> None:
        super().__init__(config, state)
        self._api_key = config.api_key.encode() if config.api_key else None
        self._static_headers = (
            b"anthropic-ratelimit-requests-limit: 4000\r\nanthropic-ratelimit-requests-remaining: 3999\r\n"
            b"anthropic-ratelimit-requests-reset: 2030-01-01T00:00:00Z\r\n"
            b"anthropic-ratelimit-tokens-limit: 2000000\r\nanthropic-ratelimit-tokens-remaining: 1999000\r\n"
            b"anthropic-ratelimit-tokens-reset: 2030-01-01T00:00:00Z\r\n"
        )
        # Prompt-cache prefixes seen so far: a repeat of a marked prefix is a cache read.
        self._prompt_cache: dict[bytes, int] = {}
        state.on_reset.append(self._prompt_cache.clear)  # /_sim/reset also forgets the prompt cache

    # -- hooks -----------------------------------------------------------------------------
    def route(self, method: bytes, path: bytes, query: bytes) -> Route:
        if method == b"POST" and path == b"/v1/messages":
            return Route(CHAT)
        if method == b"GET" and path == b"/v1/models":
            return Route(MODELS)
        if method == b"GET" and path.startswith(b"/v1/models/") and len(path) > len(b"/v1/models/"):
            return Route(MODEL, path[len(b"/v1/models/") :].decode("latin-1"))
        return Route(None, error=ErrorSpec(404, "Not found", "not_found_error"))

    def auth_error(self, headers: dict) -> ErrorSpec | None:
        key = headers.get(b"x-api-key")
        bearer = headers.get(b"authorization")
        if key is None and bearer is None:
            return ErrorSpec(401, "x-api-key header is required", "authentication_error")
        given = (
            key if key is not None else (bearer[7:] if bearer is not None and bearer.startswith(b"Bearer ") else b"")
        )
        if not given or (self._api_key is not None and given != self._api_key):
            return ErrorSpec(401, "invalid x-api-key", "authentication_error")
        if b"anthropic-version" not in headers:
            return ErrorSpec(400, "anthropic-version: header is required", "invalid_request_error")
        return None

    def error_payload(self, err: ErrorSpec) -> dict:
        kind = err.type if err.type in _KNOWN_TYPES else ERROR_TYPES.get(err.status)
        if kind is None:
            kind = "api_error" if err.status >= 500 else "invalid_request_error"
        return {
            "type": "error",
            "error": {"type": kind, "message": err.message},
            "request_id": "req_" + short_hash(err.message, str(err.status), size=12),
        }

    def response_headers(self, rid: str, deployment: str | None) -> bytes:
        return b"request-id: %s\r\n%s" % (rid.encode(), self._static_headers)

    def throttle_headers(self, seconds: float) -> bytes:
        import math

        # Anthropic sends whole seconds only.
        return b"retry-after: %d\r\nanthropic-ratelimit-requests-remaining: 0\r\n" % math.ceil(seconds)

    def unknown_model(self, name: str) -> ErrorSpec:
        return ErrorSpec(404, f"model: {name}", "not_found_error")

    def content_filter_prompt(self) -> bytes:  # not used: Anthropic refuses with stop_reason "refusal"
        return b""

    # -- replies ---------------------------------------------------------------------------
    def _prepare(self, req: Request, route: Route, body: Any, model: str | None, fault: Fault | None) -> Reply:
        op = route.op
        if fault is not None:
            if fault.hang:
                return Reply("hang")
            if fault.throttle is not None:
                err = ErrorSpec(
                    429, "Number of request tokens has exceeded your per-minute rate limit.", "rate_limit_error"
                )
                return self._error_reply(err, None, self.throttle_headers(fault.throttle))
            if fault.status is not None and fault.status >= 400:
                generic = error_for_status(fault.status)
                message = _MESSAGES.get(fault.status, generic.message)
                if fault.error_code == "context_length_exceeded":  # Anthropic's words for an over-long prompt
                    message = "prompt is too long: 200001 tokens > 200000 maximum"
                return self._error_reply(generic._replace(message=message, type=None), None)
            if fault.cut_after is not None and not (op == CHAT and body.get("stream") is True):
                return Reply("cut")
        if op == MODELS:
            data = [self._model_info(m) for m in self.model_list()]
            return self._json_reply(
                req, {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}, None
            )
        if op == MODEL:
            name = route.deployment or ""
            if self.models is not None and name not in self.models:
                return self._error_reply(self.unknown_model(name), None)
            return self._json_reply(req, self._model_info(name), None)
        turns = wire.validate(body)
        assert model is not None  # validate() requires a string model, which _slow read
        reported = model
        if self.models is not None:
            if model not in self.models:
                return self._error_reply(self.unknown_model(model), None)
            reported = self.models[model]
        key = req.url + b"\x00" + req.body
        plan = plan_chat(wire.planner_body(body, turns), sim_name=self.name, model=reported, key=key, fault=fault)
        refuse_prompt = fault is not None and fault.content_filter == "prompt"
        mp = wire.message_plan(body, plan, key, refuse_prompt)
        cached = self._cache_usage(body, turns, mp)
        if body.get("stream") is True:
            reply: Reply = MessageReply(mp, self._sse_headers(req, None))
            if fault is None and not cached and req.http_11:
                reply = Reply("response", self._whole_stream(reply))
                self._remember(req, model, True, reply.payload)
            return reply
        reply = self._json_reply(req, wire.render_message(mp), None)
        if fault is None and not cached:
            self._remember(req, model, False, reply.payload)
        return reply

    def _cache_usage(self, body: dict, turns: list[dict], mp: wire.MessagePlan) -> bool:
        """Apply prompt-cache accounting; True when the request had cache markers (its reply
        depends on what came before, so it must not be served from the byte cache)."""
        prefix = wire.cache_prefix(body, turns)
        if prefix is None:
            return False
        key, tokens = prefix
        tokens = min(tokens, mp.input_tokens)
        if key in self._prompt_cache:
            mp.cache_read = tokens
        else:
            if len(self._prompt_cache) >= _PROMPT_CACHE_MAX:
                self._prompt_cache.clear()
            self._prompt_cache[key] = tokens
            mp.cache_creation = tokens
        mp.input_tokens -= tokens  # Anthropic's input_tokens excludes cache reads and writes
        return True

    def _model_info(self, name: str) -> dict:
        return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}

    def model_list(self) -> list[str]:
        return list(self.models) if self.models is not None else list(_MODELS)

    def _whole_stream(self, reply: Reply) -> bytes:
        parts = [status_line(200), reply.headers, b"transfer-encoding: chunked\r\n\r\n"]
        for _, event, data in wire.stream_events(_message_plan(reply)):
            parts.append(frame(wire.sse(event, data)))
        parts.append(b"0\r\n\r\n")
        return b"".join(parts)

    stream_end = b""  # Anthropic streams end with message_stop, no sentinel

    def stream_frames(self, reply: Reply, fault: Fault | None):
        for stage, event, data in wire.stream_events(_message_plan(reply)):
            yield stage == wire.CONTENT, wire.sse(event, data)

    def malformed_frame(self, good: bytes) -> bytes:
        return b"event: content_block_delta\ndata: {not json\n\n" + good
