"""Vertex AI OAuth bearer tokens from google-auth, cached until shortly before expiry.

google-auth refreshes synchronously (HTTP to the token endpoint, RSA signing), so a refresh runs
in a worker thread, never on the event loop, and only one refresh runs at a time.
"""

from __future__ import annotations

import asyncio
import datetime
import time

from ...config import ConfigError, GoogleAuth, env_secret

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
                self._credentials = service_account.Credentials.from_service_account_file(path, scopes=self._scopes)
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
