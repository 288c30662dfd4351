"""The `vault` KMS: HashiCorp Vault / OpenBao Transit over its HTTP API (`/v1/<mount>/...`,
`X-Vault-Token`, payloads in `{"data": ...}`, errors in `{"errors": [...]}`).

Data keys come from `datakey/plaintext/<key>` and are unwrapped with `decrypt/<key>`; `rewrap/<key>`
moves them to the newest key version without the plaintext leaving Vault; `keys/<key>/rotate` makes
a version. Per-tenant keys are created as `derived` keys, so every call carries the encryption
context (base64 of the canonical context) and a wrapped key copied to another row does not decrypt. A key
that is not derived (a `key_id` made without `derived=true`) gets no new data keys: Transit would ignore
the context.
The stored wrapped key is Vault's `vault:v<N>:...` string as is; N is the key version. A shred sets
`deletion_allowed` and deletes the key (every version).
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp

from ...config.kms import VaultKmsConfig
from ..errors import KmsRefused, KmsUnavailable
from ..kms import KmsBackend, NewDataKey, Rewrapped
from .local import context_bytes
from .secrets import required_env


def _version(ciphertext: str) -> str:
    """N of `vault:vN:...`."""
    parts = ciphertext.split(":", 2)
    return parts[1][1:] if len(parts) == 3 and parts[1].startswith("v") else ""


class VaultKms(KmsBackend):
    name: ClassVar[str] = "vault"

    def __init__(self, cfg: VaultKmsConfig, *, where: str, timeout_s: float = 5.0, attempts: int = 1) -> None:
        self._cfg = cfg
        # One HTTP request per try, never longer than the operation's deadline (no retries here: a
        # failed call fails the operation, and the keyring's cache and the client retry instead).
        self._timeout_s = min(cfg.timeout_s or timeout_s, timeout_s)
        self._base = f"{cfg.address.rstrip('/')}/v1/{cfg.mount.strip('/')}"
        token = required_env(cfg.token_env, what=f"{where}.token_env")
        self._headers = {"X-Vault-Token": token}
        if cfg.namespace:
            self._headers["X-Vault-Namespace"] = cfg.namespace
        self._session: aiohttp.ClientSession | None = None
        self._derived: set[str] = set()  # keys read and found derived (_check_derived)

    @property
    def label(self) -> str:
        return f"Vault Transit ({self._cfg.address}, mount {self._cfg.mount})"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ssl_ctx: ssl.SSLContext | bool = True
            if self._cfg.ca_file:
                ssl_ctx = ssl.create_default_context(cafile=self._cfg.ca_file)
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=16),
            )
        return self._session

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            async with self._http().request(method, f"{self._base}/{path}", json=body) as resp:
                status = resp.status
                payload = await resp.json(content_type=None) if status != 204 else {}
        except TimeoutError:
            raise KmsUnavailable(self.label, f"{method} {path}: no answer within {self._timeout_s:g} s") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise KmsUnavailable(self.label, f"{method} {path}: {type(exc).__name__}") from None
        if not isinstance(payload, dict):  # JSON, but not Vault's object (a proxy, another API): nothing in it
            payload = {}
        if status >= 300:
            listed = payload.get("errors")
            errors = "; ".join(str(e) for e in (listed if isinstance(listed, list) else []))[:300] or f"HTTP {status}"
            if status >= 500 or status == 429:  # sealed, standby without forwarding, rate limited
                raise KmsUnavailable(self.label, f"{path.split('/')[0]}: HTTP {status}: {errors}")
            raise KmsRefused(self.label, f"{path.split('/')[0]} {path.split('/')[-1]}: HTTP {status}: {errors}")
        data = payload.get("data")
        return data if isinstance(data, dict) else {}

    def _field(self, data: dict[str, Any], name: str, op: str) -> str:
        """A string field of a 2xx answer; one that lacks it (a proxy's empty 200, another API) is the KMS's
        failure to answer (a 503 naming it), not a KeyError that was a 500."""
        value = data.get(name) if isinstance(data, dict) else None
        if not isinstance(value, str):
            raise KmsUnavailable(self.label, f"{op}: the answer has no {name!r}")
        return value

    def _key_bytes(self, data: dict[str, Any], op: str) -> bytes:
        try:
            key = base64.b64decode(self._field(data, "plaintext", op), validate=True)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise KmsUnavailable(self.label, f"{op}: the answer's 'plaintext' is not a 256-bit key")
        return key

    async def generate_data_key(self, kek_id: str, context: Mapping[str, str], *, create: bool) -> NewDataKey:
        body = {"context": base64.b64encode(context_bytes(context)).decode(), "bits": 256}
        if create:
            await self._ensure(kek_id)
        if kek_id not in self._derived:
            await self._check_derived(kek_id)
        data = await self._call("POST", f"datakey/plaintext/{kek_id}", body)
        ciphertext = self._field(data, "ciphertext", "datakey")
        return NewDataKey(self._key_bytes(data, "datakey"), ciphertext.encode(), kek_id, _version(ciphertext))

    async def _check_derived(self, kek_id: str) -> None:
        """Transit ignores `context` for a key that is not derived: a data key wrapped under one would unwrap
        for any tenant's row. New data keys go only under derived keys (read once per key and process)."""
        if (await self._call("GET", f"keys/{kek_id}")).get("derived") is not True:
            raise KmsRefused(
                self.label,
                f"keys {kek_id}: not a derived key, so Vault would ignore the encryption context that binds each "
                "data key to its tenant; make a key with derived=true and name it (docs/encryption.md)",
            )
        self._derived.add(kek_id)

    async def _ensure(self, kek_id: str) -> None:
        """Create the per-tenant key if missing (creating an existing key is a no-op in Transit)."""
        await self._call("POST", f"keys/{kek_id}", {"type": "aes256-gcm96", "derived": True})

    async def decrypt(self, kek_id: str, kek_version: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        data = await self._call(
            "POST",
            f"decrypt/{kek_id}",
            {"ciphertext": wrapped.decode(), "context": base64.b64encode(context_bytes(context)).decode()},
        )
        return self._key_bytes(data, "decrypt")

    async def rewrap(self, kek_id: str, kek_version: str, wrapped: bytes, context: Mapping[str, str]) -> Rewrapped:
        data = await self._call(
            "POST",
            f"rewrap/{kek_id}",
            {"ciphertext": wrapped.decode(), "context": base64.b64encode(context_bytes(context)).decode()},
        )
        ciphertext = self._field(data, "ciphertext", "rewrap")
        return Rewrapped(ciphertext.encode(), _version(ciphertext))

    async def create_key_version(self, kek_id: str) -> str:
        await self._call("POST", f"keys/{kek_id}/rotate")
        latest = (await self._call("GET", f"keys/{kek_id}")).get("latest_version")
        if not isinstance(latest, int):
            raise KmsUnavailable(self.label, "keys: the answer has no 'latest_version'")
        return str(latest)

    async def destroy(self, kek_id: str) -> None:
        try:
            await self._call("POST", f"keys/{kek_id}/config", {"deletion_allowed": True})
        except KmsRefused as exc:
            if "HTTP 404" in str(exc) or "not found" in str(exc):
                return
            raise
        await self._call("DELETE", f"keys/{kek_id}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
