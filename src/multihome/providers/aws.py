"""Who the gateway is to AWS: SigV4 with botocore's credential chain or an assumed role, or a
Bedrock API key (`Authorization: Bearer`); and what AWS's error answers mean for routing.

Shared by the kinds Bedrock Runtime serves (`bedrock`: Converse; `bedrock_anthropic`: InvokeModel
with Anthropic's body): one signer, one reading of `x-amzn-ErrorType`.

botocore resolves and refreshes credentials synchronously (files, IMDS, an STS call). None of
that may run on the event loop: the first resolution and every refresh run in a worker thread,
refreshes start ahead of expiry (botocore's advisory window, 15 minutes for assumed roles) and
calls keep signing with the still-valid credentials meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import botocore.session
import msgspec
from botocore.auth import (  # type: ignore[attr-defined]  # _host_from_url is private: botocore-stubs type only the public surface
    SIGNED_HEADERS_BLACKLIST,
    SigV4Auth,
    _host_from_url,
)
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
    ReadOnlyCredentials,
    RefreshableCredentials,
)

from ..config import AwsAuth, Provider, env_secret
from ..schema.bounded import Decoder
from ..schema.errors import ApiError
from . import botocore_logs
from .api_key import api_key_of
from .base import (
    CAPACITY,
    CLIENT_ERROR,
    CONTEXT_OVERFLOW,
    CONTEXT_OVERFLOW_LABEL,
    UNAVAILABLE,
    Classified,
    UpstreamRequest,
)
from .errors import classify_http, retry_after_seconds

log = logging.getLogger(__name__)
SERVICE = "bedrock"  # the signing name; the host is bedrock-runtime.*
_RECHECK_S = 1.0  # how often the hot path asks botocore whether a refresh is due
_MIN_LEFT_S = 60  # below this much validity, calls wait for the refresh instead of racing expiry


class CredentialError(Exception):
    """No usable AWS credentials (the message never contains a secret)."""


def _no_credentials(provider: str, detail: str) -> ApiError:
    return ApiError(
        502,
        f"Provider '{provider}' has no usable AWS credentials ({detail}). An operator must fix the provider's credentials.",
        type="server_error",
        code="upstream_auth_failed",
    )


class AwsCredentials:
    """botocore credentials, resolved and refreshed off the event loop."""

    def __init__(self, provider: str, region: str, aws: AwsAuth | None) -> None:
        botocore_logs.install()  # botocore's DEBUG log holds session tokens and an assumed role's keys
        self._provider = provider
        self._region = region
        self._aws = aws or AwsAuth()
        self._creds: Credentials | None = None  # or RefreshableCredentials; resolved lazily
        self._frozen: ReadOnlyCredentials | None = None
        self._check_at = 0.0
        self._refresh: asyncio.Future[ReadOnlyCredentials] | None = None

    def _resolve(self) -> Credentials:
        """Runs in a worker thread: botocore's chain may read files or call IMDS / STS."""
        aws = self._aws
        session = botocore.session.Session(profile=aws.profile)
        session.set_config_variable("region", self._region)
        source = session.get_credentials()
        if source is None:
            raise CredentialError(
                "botocore's credential chain found none: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role"
            )
        if not aws.role_arn:
            return source
        extra = {"RoleSessionName": aws.role_session_name}
        if aws.external_id_env:
            external_id = env_secret(aws.external_id_env, what=f"providers.{self._provider}.auth.aws.external_id_env")
            if external_id is not None:  # always: a named variable gives its value or raises
                extra["ExternalId"] = external_id
        # botocore's own AssumeRole fetcher; its STS client honours AWS_ENDPOINT_URL_STS.
        fetcher = AssumeRoleCredentialFetcher(session.create_client, source, aws.role_arn, extra_args=extra)
        return DeferredRefreshableCredentials(refresh_using=fetcher.fetch_credentials, method="assume-role")

    def _load(self) -> ReadOnlyCredentials:
        """Worker thread: resolve once, refresh when botocore says so, return a frozen snapshot."""
        creds = self._creds
        if creds is None:
            creds = self._creds = self._resolve()
        return creds.get_frozen_credentials()

    def _due(self) -> bool:
        creds = self._creds
        return creds is None or (isinstance(creds, RefreshableCredentials) and creds.refresh_needed())

    async def get(self) -> ReadOnlyCredentials:
        now = time.monotonic()
        if self._frozen is not None and now < self._check_at:
            return self._frozen
        if not self._due():
            self._check_at = now + _RECHECK_S
            if self._frozen is None:
                assert self._creds is not None  # not due means resolved
                self._frozen = self._creds.get_frozen_credentials()  # no refresh due: no I/O
            return self._frozen
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(asyncio.to_thread(self._load))
            self._refresh.add_done_callback(self._refreshed)
        creds = self._creds
        if (
            self._frozen is not None
            and isinstance(creds, RefreshableCredentials)
            and not creds.refresh_needed(_MIN_LEFT_S)
        ):
            return self._frozen  # refresh runs in the background; these are still good
        try:
            return await asyncio.shield(self._refresh)
        except CredentialError as exc:
            raise _no_credentials(self._provider, str(exc)) from None
        except Exception as exc:  # STS refused, profile missing...: name the kind, never the secret
            raise _no_credentials(self._provider, f"{type(exc).__name__}: {exc}") from None

    def _refreshed(self, fut: asyncio.Future[ReadOnlyCredentials]) -> None:
        self._refresh = None
        if fut.cancelled() or fut.exception() is not None:
            if not fut.cancelled():
                log.warning(
                    "AWS credentials for provider %s could not be refreshed: %s",
                    self._provider,
                    type(fut.exception()).__name__,
                )
            return
        self._frozen = fut.result()
        self._check_at = time.monotonic() + _RECHECK_S


class _Headers(dict[str, str]):
    """The subset of botocore's HTTPHeaders that SigV4Auth reads, without email.message's cost."""

    def get_all(self, name: str) -> list[str]:
        return [self[name]]


class _Request:
    """What SigV4Auth reads from an AWSRequest (method, url, headers, body, params, context)."""

    __slots__ = ("method", "url", "headers", "body", "params", "context")

    def __init__(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        self.method = "POST"
        self.url = url
        self.headers = dict(headers)
        self.body = body
        self.params: dict[str, Any] = {}
        self.context: dict[str, Any] = {}


class _SigV4(SigV4Auth):
    """botocore's SigV4 algorithm (canonical request, string to sign, signature) unchanged, with
    two hot-path costs removed: the header map is a plain dict instead of the email.message-based
    HTTPHeaders built twice per request, and the signing key (four HMACs) is derived once per day
    and secret instead of on every call. Checked against stock botocore by the simulator's
    verifier (tests/providers/test_bedrock_auth.py, tests/e2e/test_bedrock.py)."""

    _keys: dict[tuple[str | None, str, str, str], bytes] = {}
    _hosts: dict[str, str] = {}

    if TYPE_CHECKING:  # set and defined by SigV4Auth; botocore-stubs declare only its public surface
        _region_name: str
        _service_name: str

        def _sign(self, key: bytes, msg: str, hex: bool = False) -> Any: ...

    # The request is a _Request and the headers a _Headers: the duck types this class exists for.
    def headers_to_sign(self, request: _Request) -> _Headers:  # type: ignore[override]
        out = _Headers()
        for name, value in request.headers.items():
            lname = name.lower()
            if lname not in SIGNED_HEADERS_BLACKLIST:
                out[lname] = value
        if "host" not in out:
            base = request.url.split("/model/", 1)[0]
            host = self._hosts.get(base)
            if host is None:
                host = _host_from_url(request.url)
                if len(self._hosts) < 256:
                    self._hosts[base] = host
            out["host"] = host
        return out

    def signature(self, string_to_sign: str, request: _Request) -> str:  # type: ignore[override]
        day = request.context["timestamp"][0:8]
        cache_key = (self.credentials.secret_key, day, self._region_name, self._service_name)
        key = self._keys.get(cache_key)
        if key is None:
            k_date: bytes = self._sign(f"AWS4{self.credentials.secret_key}".encode(), day)
            k_region: bytes = self._sign(k_date, self._region_name)
            key = self._sign(self._sign(k_region, self._service_name), "aws4_request")
            if len(self._keys) > 64:
                self._keys.clear()  # old days and rotated secrets
            self._keys[cache_key] = key
        signature: str = self._sign(key, string_to_sign, hex=True)
        return signature


class SigV4Signer:
    """Signs each request with botocore's SigV4 (service `bedrock`, the provider's region)."""

    def __init__(self, credentials: AwsCredentials, region: str) -> None:
        self._credentials = credentials
        self._region = region

    async def headers(self, url: str, body: bytes, base: dict[str, str]) -> dict[str, str]:
        frozen = await self._credentials.get()
        request = _Request(url, body, base)
        _SigV4(frozen, SERVICE, self._region).add_auth(request)  # type: ignore[arg-type]  # a _Request stands in for an AWSRequest
        return request.headers


class BearerSigner:
    """A Bedrock API key: no signature, the key goes in `Authorization: Bearer`."""

    def __init__(self, key: str) -> None:
        self._auth = f"Bearer {key}"

    async def headers(self, url: str, body: bytes, base: dict[str, str]) -> dict[str, str]:
        return {**base, "authorization": self._auth}


# Bedrock exception name -> routing outcome (names not listed fall back to the HTTP status).
EXCEPTIONS = {
    "ThrottlingException": CAPACITY,
    "ServiceQuotaExceededException": CAPACITY,
    "ServiceUnavailableException": UNAVAILABLE,
    "InternalServerException": UNAVAILABLE,
    "ModelNotReadyException": UNAVAILABLE,
    "ModelTimeoutException": UNAVAILABLE,
    "ModelErrorException": UNAVAILABLE,
    "ModelStreamErrorException": UNAVAILABLE,
    "ValidationException": CLIENT_ERROR,
    "AccessDeniedException": CLIENT_ERROR,
    "UnrecognizedClientException": CLIENT_ERROR,
    "InvalidSignatureException": CLIENT_ERROR,
    "ExpiredTokenException": CLIENT_ERROR,
    "ResourceNotFoundException": CLIENT_ERROR,
    "ConflictException": CLIENT_ERROR,
}
# Bedrock's words for "the prompt does not fit the model's context window".
_TOO_LONG = ("too long", "too many tokens", "input is too large", "context window", "maximum context length")


class _ErrorBody(msgspec.Struct):
    message: str | None = None
    Message: str | None = None
    type_: str | None = msgspec.field(default=None, name="__type")


_error_body = Decoder(_ErrorBody)


def error_name(headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """(exception name, message) from `x-amzn-ErrorType` (preferred, as botocore does) or `__type`."""
    try:
        err = _error_body.decode(body)
    except msgspec.DecodeError:
        err = _ErrorBody()
    raw = headers.get("x-amzn-ErrorType") or headers.get("x-amzn-errortype") or err.type_ or ""
    # "ThrottlingException:http://internal.amazon.com/..." or "com.amazon.coral.validate#ValidationException"
    name = raw.split(":", 1)[0].rsplit("#", 1)[-1] or None
    return name, err.message or err.Message or ""


def is_context_overflow(message: str) -> bool:
    low = message.lower()
    return any(phrase in low for phrase in _TOO_LONG)


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Classified:
    """A Bedrock Runtime error -> routing outcome, by exception name first, else by status."""
    name, message = error_name(headers, body)
    kind = EXCEPTIONS.get(name or "")
    if kind is None:
        return classify_http(status, headers, body)
    if name == "ValidationException" and is_context_overflow(message):
        return Classified(CONTEXT_OVERFLOW, CONTEXT_OVERFLOW_LABEL)
    return Classified(kind, f"http_{status}", retry_after_seconds(headers) if kind != CLIENT_ERROR else None)


def client_error_body(status: int, body: bytes) -> bytes:
    """A Bedrock 4xx body (`{"message"}`) in OpenAI's envelope, for the front door: the code is
    `context_length_exceeded` for an over-long prompt, else the exception name when the body
    carries one (`__type`; the `x-amzn-ErrorType` header is not passed to this hook)."""
    name, message = error_name({}, body)
    code = "context_length_exceeded" if is_context_overflow(message) else name
    text = f"AWS Bedrock: {message}" if message else f"AWS Bedrock error (HTTP {status})."
    return msgspec.json.encode(
        {"error": {"message": text, "type": "invalid_request_error", "param": None, "code": code}}
    )


def stream_error_payload(kind: str, message: str) -> bytes:
    """An OpenAI-shaped error event for an event-stream exception frame: the relay ends the stream
    with it and the SDK raises it."""
    return msgspec.json.encode(
        {
            "error": {
                "message": f"AWS Bedrock stream error ({kind}): {message}",
                "type": "server_error",
                "param": None,
                "code": kind,
            }
        }
    )


JSON_HEADERS = {"content-type": "application/json"}
STREAM_HEADERS = {"content-type": "application/json", "accept": "application/vnd.amazon.eventstream"}


class Runtime:
    """Signed calls to one Bedrock Runtime endpoint, `POST {endpoint}/model/{modelId}/{operation}`."""

    def __init__(self, provider: str, endpoint: str, signer: BearerSigner | SigV4Signer) -> None:
        self.provider = provider
        self.base = endpoint.rstrip("/")
        self._signer = signer
        self._urls: dict[tuple[str, str], str] = {}

    def url(self, model: str, operation: str) -> str:
        url = self._urls.get((model, operation))
        if url is None:
            # The model id is one percent-encoded path label (`:` -> %3A, ARN `/` -> %2F), exactly
            # as botocore sends it; the upstream client sends an already encoded path as it is (the
            # bytes on the wire must be the ones that were signed: tests/providers check them).
            url = f"{self.base}/model/{quote(model, safe='')}/{operation}"
            if len(self._urls) < 4096:
                self._urls[(model, operation)] = url
        return url

    async def request(
        self, model: str, operation: str, body: bytes, base: dict[str, str], dropped: list[str]
    ) -> UpstreamRequest:
        return await self.signed(self.url(model, operation), body, base, dropped)

    async def signed(self, url: str, body: bytes, base: dict[str, str], dropped: list[str]) -> UpstreamRequest:
        """A call to `url` (on this endpoint) with its signature or API key."""
        headers = await self._signer.headers(url, body, base)
        return UpstreamRequest(url, headers, body, dropped)


def runtime(name: str, provider: Provider, endpoint: str, stored_key: str | None = None) -> Runtime:
    """Provider `name`'s Bedrock Runtime: a Bedrock API key when the config names one, else SigV4
    with botocore's credential chain (or the assumed role `auth.aws` names)."""
    where = f"providers.{name}"
    region = provider.region
    if region is None:  # a loaded config has one (the kind requires it); this is for one built by hand
        raise ValueError(f"{where}: a Bedrock provider needs a region")
    api_key = api_key_of(provider, stored_key, what=f"{where}.auth.api_key_env")
    signer: BearerSigner | SigV4Signer
    if api_key or provider.auth.api_key_from == "store":  # a stored key not set yet: no credential, not the chain
        signer = BearerSigner(api_key or "")
    else:
        signer = SigV4Signer(AwsCredentials(name, region, provider.auth.aws), region)
    return Runtime(name, endpoint, signer)
