"""The `azure` KMS: Azure Key Vault wrapKey / unwrapKey (RSA-OAEP-256) through `azure-keyvault-keys`
with azure-identity credentials (a client secret named by env vars, else DefaultAzureCredential:
managed identity, env, CLI...). The SDK is synchronous here; each call runs in a worker thread.

A data key is 32 random bytes made here and wrapped under the newest version of the tenant's RSA
key (the SDK wraps with the public key it fetched; unwrapping always happens in Key Vault). The
stored KEK id is `<vault>/keys/<name>` and the version the `kid`'s last segment. A newest version that is
disabled is refused here (the vault refuses its unwrapKey itself). Key Vault has no
re-wrap call: `rewrap` unwraps with the stored version and wraps under the newest. RSA-OAEP has no
associated data, so the encryption context is bound by the envelope's associated data instead
(docs/encryption.md). A shred soft-deletes the key and purges it (a vault with purge protection
keeps it, deleted and unusable, until its retention ends).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from ...config.kms import AzureKmsConfig
from ..errors import KmsRefused, KmsUnavailable
from ..kms import KmsBackend, NewDataKey, Rewrapped
from .secrets import required_env

T = TypeVar("T")


def default_credential(cfg: AzureKmsConfig, where: str) -> Any:
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if cfg.tenant_id_env and cfg.client_id_env and cfg.client_secret_env:
        return ClientSecretCredential(
            required_env(cfg.tenant_id_env, what=f"{where}.tenant_id_env"),
            required_env(cfg.client_id_env, what=f"{where}.client_id_env"),
            required_env(cfg.client_secret_env, what=f"{where}.client_secret_env"),
        )
    return DefaultAzureCredential()


class AzureKms(KmsBackend):
    name: ClassVar[str] = "azure"

    def __init__(
        self, cfg: AzureKmsConfig, *, where: str, credential: Any = None, timeout_s: float = 5.0, attempts: int = 2
    ) -> None:
        from azure.keyvault.keys import KeyClient

        self._cfg = cfg
        self._vault = cfg.vault_url.rstrip("/")
        self._credential = credential if credential is not None else default_credential(cfg, where)
        per_try = min(cfg.timeout_s or timeout_s, timeout_s)
        # azure-core retries 10 times with backoff by default (minutes against a hung vault): here the
        # tries fit the operation's deadline, which the keyring enforces (this bounds the worker thread).
        self._opts: dict[str, Any] = {
            "verify_challenge_resource": cfg.verify_challenge_resource,
            "connection_timeout": per_try,
            "read_timeout": per_try,
            "retry_total": attempts - 1,
            "retry_backoff_max": timeout_s,
            "timeout": timeout_s,  # azure-core's RetryPolicy: no retry starts past this many seconds
        }
        if cfg.ca_file:
            self._opts["connection_verify"] = cfg.ca_file
        self._keys = KeyClient(self._vault, self._credential, **self._opts)
        self._crypto: dict[str, Any] = {}  # kid -> CryptographyClient (holds the fetched public key)
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"Azure Key Vault ({self._vault})"

    def _name(self, kek_id: str) -> str:
        prefix = f"{self._vault}/keys/"
        return kek_id[len(prefix) :].split("/")[0] if kek_id.startswith(prefix) else kek_id

    def _client(self, kid: str) -> Any:
        from azure.keyvault.keys.crypto import CryptographyClient

        with self._lock:
            client = self._crypto.get(kid)
            if client is None:
                client = self._crypto[kid] = CryptographyClient(kid, self._credential, **self._opts)
            return client

    async def _run(self, what: str, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._call, what, fn)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            return fn()
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise KmsUnavailable(self.label, f"{what}: {type(exc).__name__}") from None
        except ClientAuthenticationError as exc:
            raise KmsRefused(self.label, f"{what}: authentication failed ({type(exc).__name__})") from None
        except HttpResponseError as exc:
            code = getattr(exc.error, "code", None) or exc.reason or ""
            status = exc.status_code or 0
            message = f"{what}: HTTP {status} {code}".strip()
            if status >= 500 or status == 429:
                raise KmsUnavailable(self.label, message) from None
            raise KmsRefused(self.label, message) from None

    def _latest(self, name: str, create: bool) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._keys.get_key(name)
        except ResourceNotFoundError:
            if not create:
                raise
            return self._keys.create_rsa_key(name, size=self._cfg.key_size)

    def _wrap_latest(self, name: str, plaintext: bytes, create: bool) -> tuple[bytes, str]:
        from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

        key = self._latest(name, create)
        if key.properties.enabled is False:
            # Key Vault shows a disabled key's public half and the SDK wraps with it here, never asking the
            # vault: without this check new data keys would go on being wrapped under a key the KMS refuses.
            raise KmsRefused(self.label, f"wrapKey: key {name} version {key.properties.version} is disabled")
        result = CryptographyClient(key, self._credential, **self._opts).wrap_key(
            KeyWrapAlgorithm.rsa_oaep_256, plaintext
        )
        return result.encrypted_key, key.properties.version

    def _unwrap(self, name: str, version: str, wrapped: bytes) -> bytes:
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        client = self._client(f"{self._vault}/keys/{name}/{version}")
        return client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key

    async def generate_data_key(self, kek_id: str, context: Mapping[str, str], *, create: bool) -> NewDataKey:
        name = self._name(kek_id)
        plaintext = os.urandom(32)
        wrapped, version = await self._run("wrapKey", lambda: self._wrap_latest(name, plaintext, create))
        return NewDataKey(plaintext, wrapped, f"{self._vault}/keys/{name}", version)

    async def decrypt(self, kek_id: str, kek_version: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        name = self._name(kek_id)
        return await self._run("unwrapKey", lambda: self._unwrap(name, kek_version, wrapped))

    async def rewrap(self, kek_id: str, kek_version: str, wrapped: bytes, context: Mapping[str, str]) -> Rewrapped:
        name = self._name(kek_id)

        def both() -> tuple[bytes, str]:
            return self._wrap_latest(name, self._unwrap(name, kek_version, wrapped), False)

        new, version = await self._run("rewrap (unwrapKey + wrapKey)", both)
        return Rewrapped(new, version)

    async def create_key_version(self, kek_id: str) -> str:
        name = self._name(kek_id)
        key = await self._run("create key version", lambda: self._keys.create_rsa_key(name, size=self._cfg.key_size))
        return str(key.properties.version)

    async def destroy(self, kek_id: str) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        name = self._name(kek_id)

        def delete_and_purge() -> None:
            try:
                self._keys.begin_delete_key(name).result()
            except ResourceNotFoundError:
                return
            try:
                self._keys.purge_deleted_key(name)
            except HttpResponseError as exc:
                if exc.status_code != 403:  # 403: purge protection; the key stays deleted until retention ends
                    raise

        await self._run("delete key", delete_and_purge)
        with self._lock:
            self._crypto = {kid: c for kid, c in self._crypto.items() if f"/keys/{name}/" not in kid}

    async def close(self) -> None:
        await asyncio.to_thread(self._keys.close)
        close = getattr(self._credential, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
