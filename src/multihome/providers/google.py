"""Vertex AI OAuth bearer tokens from google-auth, cached until shortly before expiry.

Shared by the kinds Vertex AI serves (Gemini on Vertex, Claude on Vertex): both send
`Authorization: Bearer <token>` for a service account or application default credentials.

google-auth refreshes synchronously (HTTP to the token endpoint, RSA signing), so a refresh runs
in a worker thread, never on the event loop, and only one refresh runs at a time.
"""

from __future__ import annotations

import asyncio
import datetime
import time

from ..config import ConfigError, GoogleAuth, env_secret
from ..schema.errors import ApiError

# Refresh this long before expiry, so no call waits on a refresh at the edge (tokens live ~1 h).
REFRESH_MARGIN_S = 300


class GoogleTokens:
    def __init__(self, auth: GoogleAuth, where: str) -> None:
        import google.auth.transport.requests
        import requests

        self._scopes = [auth.scope]
        self._credentials = None
        path = env_secret(auth.service_account_file_env, what=f"{where}.service_account_file_env")
        if path is not None:
            from google.oauth2 import service_account

            try:
                # google-auth leaves this classmethod unannotated
                self._credentials = service_account.Credentials.from_service_account_file(path, scopes=self._scopes)  # type: ignore[no-untyped-call]
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{where}.service_account_file_env: cannot load {path!r}: {exc}") from None
        # One requests session for every refresh (connection reuse to the token endpoint).
        self._session = requests.Session()
        self._request = google.auth.transport.requests.Request(session=self._session)
        self._token = ""
        self._expires_at = 0.0  # unix seconds
        self._lock = asyncio.Lock()
        self.refreshes = 0

    async def bearer(self) -> str:
        if time.time() < self._expires_at - REFRESH_MARGIN_S:
            return self._token
        async with self._lock:
            if time.time() >= self._expires_at - REFRESH_MARGIN_S:
                self._token, self._expires_at = await asyncio.to_thread(self._refresh)
                self.refreshes += 1
        return self._token

    def _refresh(self) -> tuple[str, float]:
        """Runs in a worker thread."""
        if self._credentials is None:
            import google.auth

            # Application default credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata server.
            self._credentials, _ = google.auth.default(scopes=self._scopes)
        self._credentials.refresh(self._request)
        expiry = self._credentials.expiry  # naive UTC datetime, or None when unknown
        if expiry is None:
            return self._credentials.token, time.time() + REFRESH_MARGIN_S + 60
        return self._credentials.token, expiry.replace(tzinfo=datetime.UTC).timestamp()

    async def close(self) -> None:
        self._session.close()


async def bearer_header(tokens: GoogleTokens, provider: str) -> str:
    """`Bearer <token>`; a failed refresh is a 502 that names the provider, never a 500 or a secret."""
    try:
        return "Bearer " + await tokens.bearer()
    except Exception as exc:  # google-auth and requests raise many kinds; none may become a 500
        raise ApiError(
            502,
            f"Provider '{provider}' could not obtain a Google OAuth token ({type(exc).__name__}). "
            "An operator must fix the provider's credentials.",
            type="server_error",
            code="upstream_auth_failed",
        ) from None
