"""Single sign-on to the console (config `console.oidc`): OpenID Connect's authorization code flow with PKCE.

The provider is reached as the gateway reaches its JWKS (identity/provider_http.py): no redirect followed,
a bounded answer, https endpoints (http on loopback only) named by the configured issuer's own document.

`/console/login/oidc` sends the browser to the identity provider with a fresh state, nonce and PKCE
challenge, sealed in a short-lived cookie of their own; `/console/oidc/callback` checks the state, trades
the code for an ID token at the provider's token endpoint, and hands the token to the gateway's own
authenticator, which verifies it as the `identity.oidc` issuer it names (signature, issuer, audience, expiry,
the claims that make tenant and roles, revocations), then checks the nonce. The ID token becomes the
session's credential, so the session also ends when the token expires or is revoked.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import time
from urllib.parse import urlencode

import aiohttp
import jwt
import msgspec

from ...config.console import ConsoleOidc
from ...config.oidc import check_url
from ...identity.provider_http import FetchError, fetch_json
from .session import Sessions

log = logging.getLogger("multihome.console")

PENDING_COOKIE = "mh_console_sso"
_PURPOSE = b"multihome-console-sso-v1"
_TTL_S = 600  # a sign-on must come back within ten minutes
_TIMEOUT_S = 10.0


class SsoError(Exception):
    """The sign-on failed; the message is for the person at the login page (never a token or secret)."""


class Pending(msgspec.Struct, frozen=True):
    state: str
    nonce: str
    verifier: str
    redirect_uri: str
    next: str | None
    expires: float


class SingleSignOn:
    def __init__(self, cfg: ConsoleOidc, issuer_url: str, sessions: Sessions) -> None:
        self.cfg = cfg
        self.issuer = issuer_url  # the exact `iss`, as identity.oidc has it
        self.issuer_url = issuer_url.rstrip("/")
        self.sessions = sessions
        self._endpoints: dict[str, str] | None = None

    async def endpoints(self) -> dict[str, str]:
        """The provider's authorization and token endpoints, from its discovery document (read once). The
        document must be the configured issuer's, and each endpoint https (http on loopback only): the token
        endpoint gets the code and the client secret, the authorization endpoint the person's browser."""
        if self._endpoints is None:
            url = self.issuer_url + "/.well-known/openid-configuration"
            try:
                async with aiohttp.ClientSession() as http:
                    doc, _ = await fetch_json(http, url, "discovery document", timeout_s=_TIMEOUT_S)
                if doc.get("issuer") != self.issuer:
                    raise FetchError("it names another issuer")
                for k in ("authorization_endpoint", "token_endpoint"):
                    if not isinstance(doc.get(k), str):
                        raise FetchError(f"it has no {k}")
                    try:
                        check_url(doc[k], k)
                    except ValueError as exc:
                        raise FetchError(str(exc)) from None
            except FetchError as exc:
                log.warning("console single sign-on: the identity provider's discovery document: %s", exc)
                raise SsoError(
                    "The identity provider's discovery document could not be used; try again shortly."
                ) from None
            self._endpoints = {k: doc[k] for k in ("authorization_endpoint", "token_endpoint")}
        return self._endpoints

    async def start(self, redirect_uri: str, target: str | None) -> tuple[str, str]:
        """-> (where to send the browser, the sealed cookie that remembers this sign-on)."""
        ends = await self.endpoints()
        pending = Pending(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            redirect_uri=self.cfg.redirect_uri or redirect_uri,
            next=target,
            expires=time.time() + _TTL_S,
        )
        challenge = base64.urlsafe_b64encode(hashlib.sha256(pending.verifier.encode()).digest()).decode().rstrip("=")
        query = {
            "response_type": "code",
            "client_id": self.cfg.client_id,
            "redirect_uri": pending.redirect_uri,
            "scope": " ".join(self.cfg.scopes),
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        sep = "&" if "?" in ends["authorization_endpoint"] else "?"
        return ends["authorization_endpoint"] + sep + urlencode(query), self.sessions.seal(
            msgspec.json.encode(pending), _PURPOSE
        )

    def pending(self, cookie: str | None, state: str | None) -> Pending:
        """The sign-on this browser started, if `state` is the one it was sent with."""
        try:
            pending = msgspec.json.decode(self.sessions.unseal(cookie, _PURPOSE), type=Pending)
        except Exception:
            raise SsoError("This sign-on was not started here, or took too long; start again.") from None
        if pending.expires < time.time() or not state or not secrets.compare_digest(pending.state, state):
            raise SsoError("This sign-on was not started here, or took too long; start again.")
        return pending

    async def token(self, pending: Pending, code: str) -> str:
        """Trade the authorization code for the ID token."""
        ends = await self.endpoints()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "client_id": self.cfg.client_id,
            "code_verifier": pending.verifier,
        }
        if self.cfg.client_secret_env:
            form["client_secret"] = os.environ.get(self.cfg.client_secret_env, "")
        try:
            async with aiohttp.ClientSession() as http:
                answer, _ = await fetch_json(
                    http, ends["token_endpoint"], "token answer", timeout_s=_TIMEOUT_S, form=form
                )
        except FetchError as exc:  # unreachable, an error status, a redirect (not followed), too large, not JSON
            log.warning("console single sign-on: the token endpoint: %s", exc)
            raise SsoError("The identity provider did not issue an ID token for this sign-on.") from None
        token = answer.get("id_token")
        if not isinstance(token, str):
            raise SsoError("The identity provider did not issue an ID token for this sign-on.")
        return token

    @staticmethod
    def check_nonce(token: str, pending: Pending) -> None:
        """After the authenticator verified the token's signature: it was issued for this sign-on."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:  # not a JWT at all (the authenticator took it for an API key): not this sign-on's
            claims = {}
        if not secrets.compare_digest(str(claims.get("nonce", "")), pending.nonce):
            raise SsoError("The ID token was not issued for this sign-on; start again.")
