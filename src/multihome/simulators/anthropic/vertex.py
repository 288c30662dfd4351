"""The ``vertex_anthropic`` kind: Claude on Vertex AI, and the OAuth2 token endpoint that signs it in.

Claude on Vertex is Anthropic's Messages API behind Google's front
(``POST /v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict``
and ``:streamRawPredict``): the body is a Messages body without ``model`` (the URL names it) and
with ``"anthropic_version": "vertex-2023-10-16"`` (or the SDK's dated version) in the body instead of the header; the answer and
the SSE stream are Anthropic's (the ``anthropic`` app's, reused). Google's front answers for itself
in Google's envelope (``{"error": {"code", "message", "status"}}``): a missing or unknown OAuth
token (401 UNAUTHENTICATED), an unknown URL (404), a wrong location (400), quota (429
RESOURCE_EXHAUSTED); what Claude refuses keeps Anthropic's envelope.

``POST /token`` is Google's OAuth2 token endpoint for the JWT-bearer grant service accounts use
(google-auth's ``service_account.Credentials`` with ``token_uri`` pointed here): the assertion is an
RS256 JWT whose signature is checked against ``SimulatorConfig.google_public_key`` when set, with
Google's audience, an issuer, a scope and a live ``exp``. The access tokens it issues are the
bearer tokens the model routes accept (besides ``oauth_token``, when configured).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any
from urllib.parse import parse_qs, unquote

from ..app import CHAT, Reply, Route
from ..chat import BadRequest
from ..config import SimulatorConfig
from ..content import short_hash
from ..errors import ErrorSpec
from ..faults import Fault
from ..gemini.api import BAD_TOKEN, MISSING_TOKEN, location_mismatch
from ..http import Connection, Request, build_response
from ..state import SimState
from .api import AnthropicApp

VERSION = "vertex-2023-10-16"
# What the body's anthropic_version may be: the version Anthropic's Vertex docs give, and the dated
# API version the anthropic SDK (2.16) writes there itself (its AnthropicVertex sends "2026-10-21").
VERSIONS = (VERSION, "2026-10-21")
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"  # google-auth signs for it whatever token_uri is
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_GOOGLE = "google"  # ErrorSpec.type of the answers Google's front gives itself
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_STATUS |= {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_METHODS = {b"rawPredict": False, b"streamRawPredict": True}
_TOKEN_LIFETIME_S = 3599


class VertexRoute(Route):
    __slots__ = ("stream",)

    def __init__(self, op: str | None, deployment: str | None = None, error: ErrorSpec | None = None, stream=False):
        super().__init__(op, deployment, None, error)
        self.stream = stream


def _google(status: int, message: str) -> ErrorSpec:
    return ErrorSpec(status, message, _GOOGLE, _STATUS.get(status, "INTERNAL"))


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class VertexAnthropicApp(AnthropicApp):
    kind = "vertex_anthropic"
    auth_headers: tuple[bytes, ...] = (b"authorization",)

    def __init__(self, config: SimulatorConfig, state: SimState) -> None:
        super().__init__(config, state)
        self.location = config.region
        self._public_key: Any = None
        if config.google_public_key:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            self._public_key = load_pem_public_key(config.google_public_key.encode())
        self._static = b"Bearer " + config.oauth_token.encode() if config.oauth_token else None
        self._issued: dict[bytes, float] = {}  # "Bearer <token>" -> expiry (unix s)
        self.token_grants = 0  # tokens issued: tests prove the client went through the grant

    # -- the OAuth2 token endpoint, beside the model routes -----------------------------------
    def handle(self, conn: Connection, req: Request):
        if req.method == b"POST" and req.url.partition(b"?")[0] == b"/token":
            return self._token(conn, req)
        return super().handle(conn, req)

    def _token(self, conn: Connection, req: Request) -> None:
        form = {k: v[0] for k, v in parse_qs(req.body.decode("latin-1")).items()}
        problem = self._grant_problem(form)
        body: dict[str, str | int]
        if problem is not None:
            status, body = 400, {"error": "invalid_grant", "error_description": problem}
        else:
            self.token_grants += 1
            token = "ya29.sim-" + short_hash(form["assertion"], str(self.token_grants), size=24)
            self._issued[b"Bearer " + token.encode()] = time.time() + _TOKEN_LIFETIME_S
            status, body = 200, {"access_token": token, "expires_in": _TOKEN_LIFETIME_S, "token_type": "Bearer"}
        payload = json.dumps(body).encode()
        conn.write(build_response(status, b"content-type: application/json\r\n", payload, close=not req.keep_alive))
        if not req.keep_alive:
            conn.finish(False)

    def _grant_problem(self, form: dict[str, str]) -> str | None:
        """Why Google would refuse this JWT-bearer grant, or None."""
        if form.get("grant_type") != JWT_BEARER:
            return f"grant_type must be {JWT_BEARER}"
        parts = form.get("assertion", "").split(".")
        if len(parts) != 3:
            return "Invalid JWT: assertion is not a signed JWT."
        try:
            header, claims = json.loads(_b64url(parts[0])), json.loads(_b64url(parts[1]))
            signature = _b64url(parts[2])
        except (ValueError, binascii.Error):
            return "Invalid JWT: the assertion is not base64url JSON."
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            return "Invalid JWT: only RS256-signed assertions are accepted."
        if self._public_key is not None:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding

            try:
                signed = f"{parts[0]}.{parts[1]}".encode()
                self._public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return "Invalid JWT Signature."
        if claims.get("aud") != GOOGLE_AUDIENCE:
            return f"Invalid JWT: audience must be {GOOGLE_AUDIENCE}"
        if not isinstance(claims.get("iss"), str) or not claims["iss"]:
            return "Invalid JWT: no issuer (the service account's email)."
        if not isinstance(claims.get("scope"), str) or not claims["scope"]:
            return "Invalid JWT: no scope."
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)) or exp <= now or exp - iat > 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
        return None

    # -- hooks ---------------------------------------------------------------------------------
    def route(self, method: bytes, path: bytes, query: bytes) -> Route:
        resource, _, verb = path.rpartition(b":")
        segs = resource.split(b"/")
        # /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}
        ok = (
            method == b"POST"
            and verb in _METHODS
            and len(segs) == 10
            and segs[1] in (b"v1", b"v1beta1")
            and segs[2] == b"projects"
            and segs[3]
            and segs[4] == b"locations"
            and segs[6:9] == [b"publishers", b"anthropic", b"models"]
            and segs[9]
        )
        if not ok:
            return VertexRoute(None, error=_google(404, f"The requested URL {path.decode('latin-1')} was not found."))
        location = unquote(segs[5].decode("latin-1"))
        if location != self.location:
            return VertexRoute(
                None,
                error=_google(400, location_mismatch("endpoint", self.location)),
            )
        return VertexRoute(CHAT, unquote(segs[9].decode("latin-1")), stream=_METHODS[verb])

    def auth_error(self, headers: dict) -> ErrorSpec | None:
        bearer = headers.get(b"authorization")
        if bearer is None or not bearer.startswith(b"Bearer ") or len(bearer) <= 7:
            return _google(401, MISSING_TOKEN)
        known = bearer == self._static or self._issued.get(bearer, 0.0) > time.time()
        if not known and (self._static is not None or self._public_key is not None or self._issued):
            return _google(401, BAD_TOKEN)
        return None

    def error_payload(self, err: ErrorSpec) -> dict:
        if err.type == _GOOGLE:
            return {"error": {"code": err.status, "message": err.message, "status": err.code}}
        return super().error_payload(err)

    def unknown_model(self, name: str) -> ErrorSpec:
        return _google(
            404,
            f"Publisher Model `projects/-/locations/{self.location}/publishers/anthropic/models/{name}` "
            "was not found or your project does not have access to it.",
        )

    def throttle_headers(self, seconds: float) -> bytes:
        return b""  # Google's 429 carries no retry-after

    # -- replies -------------------------------------------------------------------------------
    def _prepare(self, req: Request, route: Route, body: Any, model: str | None, fault: Fault | None) -> Reply:
        assert isinstance(route, VertexRoute) and model is not None  # route() makes only these, naming a model
        if fault is not None and fault.throttle is not None:
            return self._error_reply(
                _google(
                    429,
                    "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model "
                    f"with base model: anthropic-{model}. Please submit a quota increase request.",
                ),
                None,
            )
        if "model" in body:
            raise BadRequest("model: Extra inputs are not permitted (Vertex AI takes the model from the URL)")
        version = body.get("anthropic_version")
        if version not in VERSIONS:
            raise BadRequest(
                f"anthropic_version: Input should be {' or '.join(map(repr, VERSIONS))}"
                if version
                else "anthropic_version: Field required"
            )
        if (body.get("stream") is True) != route.stream:
            method = "streamRawPredict" if body.get("stream") is True else "rawPredict"
            raise BadRequest(
                f"stream: a {'' if body.get('stream') is True else 'non-'}streaming request goes to :{method}"
            )
        messages_body = {k: v for k, v in body.items() if k != "anthropic_version"}
        messages_body["model"] = model
        return super()._prepare(req, route, messages_body, model, fault)
