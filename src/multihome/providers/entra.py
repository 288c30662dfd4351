"""Entra ID bearer tokens from azure-identity, refreshed before they expire.

Shared by the kinds Azure serves (Azure OpenAI, Claude on Microsoft Foundry): they differ only in the
token's scope, which each adapter passes when the config names none.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..config import EntraAuth, env_secret

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

# Refresh Entra tokens this long before they expire, so no call waits on a refresh at the edge.
_REFRESH_MARGIN_S = 300


class EntraTokens:
    """Bearer tokens from azure-identity, cached until shortly before expiry; one refresh at a time."""

    def __init__(self, auth: EntraAuth, where: str, default_scope: str) -> None:
        from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential

        ids = (auth.tenant_id_env, auth.client_id_env, auth.client_secret_env)
        self._credential: AsyncTokenCredential
        if any(ids):
            if not all(ids):
                raise ValueError(f"{where}: set tenant_id_env, client_id_env and client_secret_env together")
            tenant = env_secret(auth.tenant_id_env, what=f"{where}.tenant_id_env")
            client = env_secret(auth.client_id_env, what=f"{where}.client_id_env")
            secret = env_secret(auth.client_secret_env, what=f"{where}.client_secret_env")
            assert tenant and client and secret  # all three are named: env_secret returned each or raised
            self._credential = ClientSecretCredential(tenant, client, secret)
        else:
            self._credential = DefaultAzureCredential()
        self._scope = auth.scope or default_scope
        self._token = ""
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    async def bearer(self) -> str:
        if time.time() < self._expires_on - _REFRESH_MARGIN_S:
            return self._token
        async with self._lock:
            if time.time() >= self._expires_on - _REFRESH_MARGIN_S:
                token = await self._credential.get_token(self._scope)
                self._token, self._expires_on = token.token, float(token.expires_on)
        return self._token

    async def close(self) -> None:
        await self._credential.close()


def entra_tokens(auth: EntraAuth | None, where: str, default_scope: str) -> EntraTokens | None:
    """The provider's token source when its config uses Entra ID (`where`: the `auth` key path)."""
    return EntraTokens(auth, f"{where}.entra", default_scope) if auth is not None else None


class AuthHeaders:
    """The headers an Azure-served kind sends on every call: static ones (with the api key, if any),
    plus `Authorization: Bearer` with a fresh Entra ID token when the provider uses Entra ID."""

    __slots__ = ("static", "_entra")

    def __init__(self, static: dict[str, str], entra: EntraTokens | None) -> None:
        self.static = static
        self._entra = entra

    async def get(self) -> dict[str, str]:
        if self._entra is None:
            return self.static
        return {**self.static, "authorization": f"Bearer {await self._entra.bearer()}"}

    async def close(self) -> None:
        if self._entra is not None:
            await self._entra.close()
