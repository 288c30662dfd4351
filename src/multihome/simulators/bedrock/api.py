"""The ``bedrock`` kind: AWS Bedrock Runtime Converse, ConverseStream, InvokeModel (embeddings, and
Claude's Messages body with InvokeModelWithResponseStream: ``invoke.py``), SigV4-verified
(or a Bedrock API key as `Authorization: Bearer`), with Bedrock error bodies and binary
event-stream responses. It also answers STS AssumeRole (``POST /``, query protocol, XML) so the
gateway's assume-role path can be exercised against a local STS via AWS_ENDPOINT_URL_STS.
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec

from ..anthropic import wire
from ..app import CHAT, EMBEDDINGS, ProviderApp, Reply, Route
from ..chat import BadRequest, plan_chat
from ..config import SimulatorConfig
from ..content import short_hash
from ..errors import ErrorSpec
from ..faults import Fault
from ..http import Connection, Request, build_response, status_line
from ..state import SimState
from . import eventstream as es
from . import invoke
from .converse import VALIDATION, Thought, render_converse, render_invoke, stream_events, thought_for, to_chat_body
from .sigv4 import Secret, started_credentials, verify, verify_request

_encode = msgspec.json.encode
_OPS = {b"converse": (CHAT, False), b"converse-stream": (CHAT, True), b"invoke": (EMBEDDINGS, False)}
_INVOKE = {b"invoke": False, b"invoke-with-response-stream": True}  # Claude: operation -> streams
# HTTP status -> the Bedrock exception AWS sends with it (for the `status=` knob).
EXCEPTION_FOR_STATUS = {
    400: VALIDATION,
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_MESSAGES = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
    "InternalServerException": "The server encountered an internal error while processing the request.",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
    "ResourceNotFoundException": "The provided model identifier is invalid.",
    "ModelTimeoutException": "The request took too long to process. Processing time exceeded the model timeout length.",
    "ModelErrorException": "The system encountered an unexpected error during processing. Try your request again.",
    "UnrecognizedClientException": "The security token included in the request is invalid.",
    VALIDATION: "Simulated validation error.",
}
_CODE_SUFFIX = b":http://internal.amazon.com/coral/com.amazon.bedrock/"


class BedrockRoute(Route):
    __slots__ = ("stream", "claude")

    def __init__(self, op, deployment=None, error=None, stream=False, claude=False):
        super().__init__(op, deployment, None, error)
        self.stream = stream
        self.claude = claude  # InvokeModel with Anthropic's Messages body


class ConverseReply(Reply):
    """A ConverseStream reply: the plan, and the model's reasoning (Claude's when thinking was asked for)."""

    __slots__ = ("thought",)

    def __init__(self, plan: Any, headers: bytes, thought: Thought | None) -> None:
        super().__init__("stream", plan=plan, headers=headers)
        self.thought = thought


class InvokeReply(Reply):
    """An InvokeModelWithResponseStream reply: the Messages plan its chunk frames render."""

    __slots__ = ("message",)

    def __init__(self, message: wire.MessagePlan, headers: bytes) -> None:
        super().__init__("stream", headers=headers)
        self.message = message


def _exception_name(err: ErrorSpec) -> str:
    if err.type and err.type.endswith("Exception"):
        return err.type
    if err.code and err.code.endswith("Exception"):
        return err.code
    return EXCEPTION_FOR_STATUS.get(err.status) or ("InternalServerException" if err.status >= 500 else VALIDATION)


def _request_id(*parts: bytes | str) -> str:
    h = short_hash(*parts, size=16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class BedrockApp(ProviderApp):
    kind = "bedrock"
    auth_headers = (b"authorization",)

    def __init__(self, config: SimulatorConfig, state: SimState) -> None:
        super().__init__(config, state)
        self.region = config.region
        # access key id -> secret (+ session token for credentials this simulator's STS issued)
        self.keys, self._bearer = started_credentials(
            config.aws_access_key_id, config.aws_secret_access_key, config.api_key
        )
        self.sts_lifetime_s = 3600  # lifetime of issued role credentials (tests shorten it)
        self.sts_calls = 0
        self._req: Request | None = None

    # -- entry: SigV4 needs the whole request, not only the headers ---------------------------
    def handle(self, conn: Connection, req: Request):
        if req.method == b"POST" and req.url.partition(b"?")[0] == b"/":
            return self._sts(conn, req)
        self._req = req  # read by auth_error, which the shared pipeline calls synchronously
        try:
            return super().handle(conn, req)
        finally:
            self._req = None

    def route(self, method: bytes, path: bytes, query: bytes) -> Route:
        if method == b"POST" and path.startswith(b"/model/"):
            model, _, op = path[len(b"/model/") :].rpartition(b"/")
            name = unquote(model.decode("latin-1"))
            if op in _INVOKE and model and invoke.is_claude(name):
                return BedrockRoute(CHAT, name, stream=_INVOKE[op], claude=True)
            spec = _OPS.get(op)
            if spec is not None and model:
                return BedrockRoute(spec[0], name, stream=spec[1])
        return Route(None, error=ErrorSpec(404, "UnknownOperationException", "UnknownOperationException"))

    def auth_error(self, headers: dict) -> ErrorSpec | None:
        auth = headers.get(b"authorization")
        if self._bearer is not None and auth is not None and auth.startswith(b"Bearer "):
            if auth == self._bearer:
                return None
            return ErrorSpec(
                403, "Invalid API Key format: Must start with pre-defined prefix", "UnrecognizedClientException"
            )
        if not self.keys:
            return (
                None
                if self._bearer is None
                else ErrorSpec(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
            )
        req = self._req
        assert req is not None  # handle() sets it around the shared pipeline
        failure = verify_request(req, self.keys, self.region)
        if failure is None:
            return None
        return ErrorSpec(failure.status, failure.message, failure.error_type)

    # -- shapes --------------------------------------------------------------------------------
    def error_payload(self, err: ErrorSpec) -> dict:
        return {"message": err.message}

    def response_headers(self, rid: str, deployment: str | None) -> bytes:
        return b"x-amzn-RequestId: " + rid.encode() + b"\r\n"

    def unknown_model(self, name: str) -> ErrorSpec:
        return ErrorSpec(404, "The provided model identifier is invalid.", "ResourceNotFoundException")

    def _error_reply(self, err: ErrorSpec, deployment: str | None, extra_headers: bytes = b"") -> Reply:
        name = _exception_name(err)
        if err.message == "UnknownOperationException":
            body = b'{"Output":{"__type":"com.amazon.coral.service#UnknownOperationException"},"Version":"1.0"}'
        else:
            body = _encode({"message": err.message})
        head = (
            b"content-type: application/json\r\nx-amzn-RequestId: "
            + _request_id(err.message, str(err.status)).encode()
            + b"\r\nx-amzn-ErrorType: "
            + name.encode()
            + _CODE_SUFFIX
            + b"\r\n"
            + extra_headers
        )
        return Reply("response", build_response(err.status, head, body), status=err.status)

    # -- replies -------------------------------------------------------------------------------
    def _prepare(self, req: Request, route: Route, body: Any, model: str | None, fault: Fault | None) -> Reply:
        assert model is not None  # every route that gets here names one in its path
        stream = getattr(route, "stream", False)
        if fault is not None:
            if fault.hang:
                return Reply("hang")
            if fault.throttle is not None:
                return self._error_reply(ErrorSpec(429, _MESSAGES["ThrottlingException"], "ThrottlingException"), None)
            if fault.status is not None and fault.status >= 400:
                name = EXCEPTION_FOR_STATUS.get(fault.status) or (
                    "InternalServerException" if fault.status >= 500 else VALIDATION
                )
                message = _MESSAGES.get(name, "Simulated error.")
                if fault.error_code == "context_length_exceeded" and name == VALIDATION:  # Bedrock's words
                    message = "Input is too long for requested model."
                return self._error_reply(ErrorSpec(fault.status, message, name), None)
            if fault.cut_after is not None and not stream:
                return Reply("cut")
        if self.models is not None and model not in self.models:
            return self._error_reply(self.unknown_model(model), None)
        reported = self.models[model] if self.models is not None else model
        if getattr(route, "claude", False):
            return self._claude(req, body, model, reported, stream, fault)
        if route.op == EMBEDDINGS:
            out, tokens = render_invoke(body, reported)
            reply = self._json_reply(req, out, None, b"x-amzn-bedrock-input-token-count: %d\r\n" % tokens)
            if fault is None:
                self._remember(req, model, False, reply.payload)
            return reply
        chat = to_chat_body(body, model)
        thought = thought_for(body, model, chat)
        if stream:
            chat["stream"] = True
        plan = plan_chat(chat, sim_name=self.name, model=reported, key=req.url + b"\x00" + req.body, fault=fault)
        filtered = fault.content_filter if fault is not None else None
        if stream:
            reply = ConverseReply(plan, self._stream_headers(req), thought)
            if fault is None and req.http_11:
                reply = Reply("response", self._whole_event_stream(reply))
                self._remember(req, model, True, reply.payload)
            return reply
        reply = self._json_reply(req, render_converse(plan, filtered, thought), None)
        if fault is None:
            self._remember(req, model, False, reply.payload)
        return reply

    def _claude(self, req: Request, body: Any, model: str, reported: str, stream: bool, fault: Fault | None) -> Reply:
        """InvokeModel / InvokeModelWithResponseStream with Claude's Messages body."""
        inner = invoke.messages_body(body, reported)
        turns = wire.validate(inner)
        key = req.url + b"\x00" + req.body
        plan = plan_chat(wire.planner_body(inner, turns), sim_name=self.name, model=reported, key=key, fault=fault)
        refuse = fault is not None and fault.content_filter == "prompt"
        mp = wire.message_plan(inner, plan, key, refuse)
        if stream:
            reply: Reply = InvokeReply(mp, self._stream_headers(req))
            if fault is None and req.http_11:
                reply = Reply("response", self._whole_event_stream(reply))
                self._remember(req, model, True, reply.payload)
            return reply
        counts = b"x-amzn-bedrock-input-token-count: %d\r\nx-amzn-bedrock-output-token-count: %d\r\n" % (
            mp.input_tokens,
            mp.output_tokens,
        )
        reply = self._json_reply(req, wire.render_message(mp), None, counts)
        if fault is None:
            self._remember(req, model, False, reply.payload)
        return reply

    def _json_reply(self, req: Request, obj: Any, deployment: str | None, extra_headers: bytes = b"") -> Reply:
        head = (
            b"content-type: application/json\r\nx-amzn-RequestId: " + _request_id(req.url, req.body).encode() + b"\r\n"
        )
        return Reply("response", build_response(200, head + extra_headers, _encode(obj)))

    def _stream_headers(self, req: Request) -> bytes:
        return (
            b"content-type: application/vnd.amazon.eventstream\r\nx-amzn-RequestId: "
            + _request_id(req.url, req.body).encode()
            + b"\r\n"
        )

    def _whole_event_stream(self, reply: Reply) -> bytes:
        data = b"".join(frame for _, frame in self.stream_frames(reply, None))
        return (
            status_line(200)
            + reply.headers
            + b"transfer-encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
        )

    stream_end = b""  # event-stream ends with messageStop/metadata frames

    def stream_frames(self, reply: Reply, fault: Fault | None):
        if isinstance(reply, InvokeReply):
            for is_content, payload in invoke.stream_chunks(reply.message):
                yield is_content, es.event("chunk", payload)
            return
        filtered = fault.content_filter if fault else None
        thought = reply.thought if isinstance(reply, ConverseReply) else None
        for is_content, name, payload in stream_events(reply.stream_plan(), filtered, thought):
            yield is_content, es.event(name, payload)

    def malformed_frame(self, good: bytes) -> bytes:
        """malformed_at=n: the n-th frame goes out with a wrong message CRC (a trailing one: none)."""
        if not good:
            return b""
        return good[:-4] + bytes(b ^ 0xFF for b in good[-4:])

    # -- STS AssumeRole --------------------------------------------------------------------------
    def _sts(self, conn: Connection, req: Request) -> None:
        form = {k: v[0] for k, v in parse_qs(req.body.decode("latin-1")).items()}
        hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in req.headers.items()}
        if self.keys:
            scope_region = ""
            auth = hdrs.get("authorization", "")
            if "Credential=" in auth:
                parts = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
                scope_region = parts[2] if len(parts) == 5 else ""
            failure = verify(
                "POST", req.url.decode("latin-1"), hdrs, req.body, keys=self.keys, region=scope_region, service="sts"
            )
            if failure is not None:
                return self._sts_error(
                    conn,
                    req,
                    403,
                    "InvalidClientTokenId" if "token" in failure.message else "SignatureDoesNotMatch",
                    failure.message,
                )
        if form.get("Action") != "AssumeRole" or not form.get("RoleArn") or not form.get("RoleSessionName"):
            return self._sts_error(
                conn, req, 400, "InvalidAction", "Only AssumeRole with RoleArn and RoleSessionName is simulated."
            )
        if "denied" in form["RoleArn"]:  # lets tests prove the gateway really goes through STS
            return self._sts_error(
                conn,
                req,
                403,
                "AccessDenied",
                f"User is not authorized to perform: sts:AssumeRole on resource: {form['RoleArn']}",
            )
        self.sts_calls += 1
        n = self.sts_calls
        akid = "ASIA" + short_hash(form["RoleArn"], str(n), size=8).upper()
        secret = Secret(
            short_hash("secret", form["RoleArn"], str(n), size=20), "FwoG" + short_hash("token", str(n), size=32)
        )
        self.keys[akid] = secret
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self.sts_lifetime_s)
        role = form["RoleArn"].rsplit("/", 1)[-1]
        xml = (
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
            f"<Credentials><AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>{secret.secret_key}</SecretAccessKey>"
            f"<SessionToken>{secret.token}</SessionToken><Expiration>{expires.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration></Credentials>"
            f"<AssumedRoleUser><AssumedRoleId>AROA{short_hash(role, size=8).upper()}:{form['RoleSessionName']}</AssumedRoleId>"
            f"<Arn>arn:aws:sts::123456789012:assumed-role/{role}/{form['RoleSessionName']}</Arn></AssumedRoleUser>"
            f"</AssumeRoleResult><ResponseMetadata><RequestId>{_request_id('sts', str(n))}</RequestId></ResponseMetadata></AssumeRoleResponse>"
        ).encode()
        conn.write(build_response(200, b"content-type: text/xml\r\n", xml, close=not req.keep_alive))
        if not req.keep_alive:
            conn.finish(False)

    def _sts_error(self, conn: Connection, req: Request, status: int, code: str, message: str) -> None:
        xml = (
            f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>{_request_id(code)}</RequestId></ErrorResponse>"
        ).encode()
        conn.write(build_response(status, b"content-type: text/xml\r\n", xml, close=not req.keep_alive))
        if not req.keep_alive:
            conn.finish(False)


__all__ = ["BedrockApp", "BadRequest"]
