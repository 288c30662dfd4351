"""The console's session: a sealed cookie that carries the credential the operator logged in with.

The cookie is AES-GCM under a key only the gateway holds (config `console.session_key_env`, else the
key `serve` hands its workers, else one drawn at start), so the browser holds nothing it can read or
change, and any replica with the key can serve the session. It carries the key or token itself so that
every page re-identifies it through the gateway's own authenticator: the session is the key's identity,
and it ends at the first request after the key is revoked or expires (or the token is revoked), at its
`console.session_ttl_s`, or at logout. Each session carries a random id and the time it was issued: a
logout, or an org-admin's cut-off, ends it by those on every replica (api/console/ends.py). A CSRF token, drawn per session and sealed with it, must come
back with every POST; the cookie is HttpOnly, SameSite=Strict, and Secure when the request came over
HTTPS (or `console.secure_cookie`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
import time

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...config.console import ConsoleConfig

COOKIE = "mh_console"
SESSION_KEY_ENV = "MULTIHOME_CONSOLE_SESSION_KEY"  # set by `serve --workers N` for its workers
_AAD = b"multihome-console-session-v1"


class Session(msgspec.Struct, frozen=True):
    credential: str  # the key or token presented at login; never shown, never logged
    csrf: str  # sent back as a hidden field with every POST
    expires: float  # unix seconds
    sid: str  # random, per session: what a logout ends, on every replica (api/console/ends.py)
    issued: float  # unix seconds: what an org-admin's "sessions issued before" cut-off compares


class SessionError(Exception):
    """The cookie is absent, forged, for another key, or expired: the viewer logs in again."""


def session_key(config: ConsoleConfig) -> bytes:
    """The 32-byte sealing key (see the module docstring for where it comes from)."""
    names = [n for n in (config.session_key_env, SESSION_KEY_ENV) if n]
    for name in names:
        value = os.environ.get(name)
        if value:
            try:
                key = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise ValueError(f"{name}: not base64") from None
            if len(key) != 32:
                raise ValueError(f"{name}: needs 32 bytes (base64 of 32 random bytes), got {len(key)}")
            return key
    if config.session_key_env:
        raise ValueError(f"console.session_key_env: the environment variable {config.session_key_env} is not set")
    return secrets.token_bytes(32)


class Sessions:
    def __init__(self, key: bytes, ttl_s: float) -> None:
        self._aead = AESGCM(key)
        self.ttl_s = ttl_s

    def new(self, credential: str) -> tuple[Session, str]:
        """A session for `credential` and its sealed cookie value."""
        now = time.time()
        session = Session(
            credential=credential,
            csrf=secrets.token_urlsafe(24),
            expires=now + self.ttl_s,
            sid=secrets.token_urlsafe(24),
            issued=now,
        )
        return session, self.seal(msgspec.json.encode(session), _AAD)

    def open(self, cookie: str | None) -> Session:
        try:
            session = msgspec.json.decode(self.unseal(cookie, _AAD), type=Session)
        except msgspec.DecodeError:  # a cookie sealed before sessions had ids: log in again
            raise SessionError("the session is of an older form") from None
        if session.expires < time.time():
            raise SessionError("the session has expired")
        return session

    def seal(self, data: bytes, purpose: bytes) -> str:
        """`data` sealed for a cookie; `purpose` binds it to one use (a session is not a sign-on in progress)."""
        nonce = secrets.token_bytes(12)
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, data, purpose)).decode().rstrip("=")

    def unseal(self, cookie: str | None, purpose: bytes) -> bytes:
        if not cookie:
            raise SessionError("no session")
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            return self._aead.decrypt(raw[:12], raw[12:], purpose)
        except (ValueError, InvalidTag):
            raise SessionError("the cookie is not one this gateway sealed") from None


def csrf_ok(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())
