"""Client API keys taken from environment variables, compared by SHA-256 digest in memory."""

from __future__ import annotations

import hashlib

from ..config import env_secret
from ..schema.errors import ApiError

_MISSING = ApiError(
    401,
    "Missing API key. Send 'Authorization: Bearer <key>' (the OpenAI SDKs do this from OPENAI_API_KEY).",
    code="invalid_api_key",
)
_INVALID = ApiError(401, "Invalid API key. Check the key you were issued for this gateway.", code="invalid_api_key")


class StaticKeys:
    def __init__(self, env_vars: list[str], *, allow_unauthenticated: bool = False) -> None:
        self._digests = frozenset(
            hashlib.sha256(env_secret(var, what=f"server.api_keys_env[{i}]").encode()).digest()
            for i, var in enumerate(env_vars)
        )
        self._open = allow_unauthenticated and not self._digests

    def check(self, authorization: bytes | None) -> None:
        if self._open:
            return
        if not authorization or not authorization[:7].lower() == b"bearer ":
            raise _MISSING
        if hashlib.sha256(authorization[7:].strip()).digest() not in self._digests:
            raise _INVALID
