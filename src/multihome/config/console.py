"""The `console:` config section: the operator's web console at `/console` (docs/console.md).

On by default wherever the admin API is: it shows what the admin API shows the same key. The session
cookie is sealed with a 32-byte key: from `session_key_env` (base64, the same on every replica and
worker, so a session survives being served by another one), else a key each process draws at start
(`serve --workers N` hands its workers one key; sessions end when the gateway restarts).
"""

from __future__ import annotations

import msgspec

from .struct import Positive, Strict


class ConsoleOidc(Strict):
    """Single sign-on to the console: OpenID Connect's authorization code flow with PKCE against one of the
    `identity.oidc` issuers, whose verification (audience, claims to tenant and roles, revocations) then
    identifies the ID token on every page, as it would the same token on an API call."""

    issuer: str  # the `name` of an identity.oidc entry; its `audiences` must include client_id
    client_id: str
    client_secret_env: str | None = None  # a confidential client's secret (a public client: PKCE alone)
    scopes: list[str] = msgspec.field(default_factory=lambda: ["openid", "profile"])
    # Where the identity provider sends the browser back; default: <this gateway's origin>/console/oidc/callback.
    redirect_uri: str | None = None
    button: str = "Log in with single sign-on"


class ConsoleConfig(Strict):
    enabled: bool = True
    session_key_env: str | None = None  # an environment variable holding 32 random bytes, base64
    # A session ends after this long, at logout, or at the first request after its key is revoked.
    session_ttl_s: Positive = 8 * 3600.0
    # Mark the cookie Secure even when a request arrives over plain HTTP (a TLS-terminating proxy in front
    # that does not send X-Forwarded-Proto).
    secure_cookie: bool = False
    oidc: ConsoleOidc | None = None
