"""Shared helpers for the identity tests: run a verifier against a LocalIssuer in one event loop."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json

from multihome.identity.oidc import OidcVerifier
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal


async def outcome(verifier: OidcVerifier, token: str) -> Principal | ApiError:
    try:
        return await verifier.verify(token)
    except ApiError as err:
        return err


def verify_all(configs, tokens, **kwargs) -> list[Principal | ApiError]:
    """A fresh verifier (one event loop), each token verified in turn."""

    async def go():
        verifier = OidcVerifier(configs, **kwargs)
        try:
            return [await outcome(verifier, t) for t in tokens]
        finally:
            await verifier.close()

    return asyncio.run(go())


def verify_one(config, token, **kwargs) -> Principal | ApiError:
    return verify_all([config], [token], **kwargs)[0]


def refused(result, status: int, code: str) -> ApiError:
    assert isinstance(result, ApiError), f"expected a refusal ({code}), got {result!r}"
    assert (result.status, result.body.code) == (status, code), (result.status, result.body.code, result.body.message)
    return result


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, payload: dict, *, hmac_secret: bytes | None = None) -> str:
    """A token built by hand: unsigned, or HMAC-signed with any bytes (PyJWT refuses to mint these)."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    sig = b"" if hmac_secret is None else hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)
