"""Verify AWS SigV4 request signatures the way AWS does: recompute with botocore and compare.

The signature is recomputed from the request exactly as received (raw path, query, the headers
named in SignedHeaders, the body) with the secret that belongs to the access key id in the
Credential scope. Errors carry the exception names and messages AWS sends.
"""

from __future__ import annotations

import datetime
import hmac
from typing import TYPE_CHECKING, NamedTuple

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MAX_SKEW = datetime.timedelta(minutes=5)
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)


if TYPE_CHECKING:
    from ..http import Request


class AuthFailure(NamedTuple):
    status: int
    error_type: str
    message: str


class Secret(NamedTuple):
    secret_key: str
    token: str | None  # a session token the request must carry (temporary credentials)


def started_credentials(
    access_key_id: str | None, secret_access_key: str | None, api_key: str | None
) -> tuple[dict[str, Secret], bytes | None]:
    """What a Bedrock simulator accepts from start: an access key for SigV4 (access key id -> secret)
    and a Bedrock API key as the whole `Authorization: Bearer ...` value (None: not configured)."""
    keys = {access_key_id: Secret(secret_access_key, None)} if access_key_id and secret_access_key else {}
    return keys, b"Bearer " + api_key.encode() if api_key else None


def _parse_authorization(value: str) -> dict[str, str] | None:
    if not value.startswith("AWS4-HMAC-SHA256 "):
        return None
    fields = {}
    for part in value[len("AWS4-HMAC-SHA256 ") :].split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key] = val
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        return None
    return fields


def verify(
    method: str,
    raw_url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    keys: dict[str, Secret],
    region: str,
    service: str,
    now: datetime.datetime | None = None,
) -> AuthFailure | None:
    """None when the request is signed correctly; else the AWS error to answer with.

    `raw_url` is the request target as received (path and query, still percent-encoded);
    `headers` has lower-case names.
    """
    auth = headers.get("authorization")
    if not auth:
        return AuthFailure(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    fields = _parse_authorization(auth)
    if fields is None:
        return AuthFailure(
            400 if auth.startswith("AWS4-HMAC-SHA256") else 403,
            "IncompleteSignatureException",
            f"Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters. Authorization={auth.split(' ')[0]}",
        )
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return AuthFailure(
            403, "IncompleteSignatureException", "Credential should be scoped to a valid region and service."
        )
    access_key, day, scope_region, scope_service, _ = scope
    secret = keys.get(access_key)
    if secret is None:
        return AuthFailure(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    if scope_region != region:
        return AuthFailure(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to a valid region. (expected '{region}', got '{scope_region}')",
        )
    if scope_service != service:
        return AuthFailure(
            403, "InvalidSignatureException", f"Credential should be scoped to correct service: '{service}'."
        )
    amz_date = headers.get("x-amz-date", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return AuthFailure(
            403,
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    now = now or datetime.datetime.now(datetime.UTC)
    if abs(now - when) > MAX_SKEW:
        earlier = (now - MAX_SKEW).strftime("%Y%m%dT%H%M%SZ")
        return AuthFailure(
            403,
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than {earlier} ({now.strftime('%Y%m%dT%H%M%SZ')} - 5 min.)",
        )
    if day != amz_date[:8]:
        return AuthFailure(
            403,
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.",
        )
    if secret.token is not None and headers.get("x-amz-security-token") != secret.token:
        return AuthFailure(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    signed = fields["SignedHeaders"].split(";")
    if "host" not in signed:
        return AuthFailure(
            403, "InvalidSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization."
        )
    missing = [h for h in signed if h not in headers]
    if missing:
        return AuthFailure(403, "InvalidSignatureException", _SIGNATURE_MISMATCH)
    # Rebuild the request from what was received, with only the signed headers, and let botocore
    # compute the signature for the client's timestamp.
    request = AWSRequest(
        method, "http://" + headers["host"] + raw_url, data=body, headers={h: headers[h] for h in signed}
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret.secret_key), scope_service, scope_region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, fields["Signature"]):
        return AuthFailure(403, "InvalidSignatureException", _SIGNATURE_MISMATCH)
    return None


def verify_request(req: Request, keys: dict[str, Secret], region: str) -> AuthFailure | None:
    """`verify` for a request this simulator received, as Bedrock Runtime checks it (service `bedrock`)."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in req.headers.items()}
    return verify(
        req.method.decode(), req.url.decode("latin-1"), headers, req.body, keys=keys, region=region, service="bedrock"
    )
