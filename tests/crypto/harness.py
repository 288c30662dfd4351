"""One harness per KMS backend: a KmsConfig pointing at a live KMS, and the backend factory."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import msgspec

from multihome.config.kms import KmsConfig, KmsTarget
from multihome.crypto import init_key_file
from multihome.crypto.backends import build_backend
from multihome.crypto.kms import KmsBackend


class Harness:
    name = "local"

    def __init__(self, request: Any, tmp_path: Any, monkeypatch: Any) -> None:
        self.request = request
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.key_file = tmp_path / "kms.key"
        init_key_file(self.key_file)

    def section(self) -> dict[str, Any]:
        return {"backend": "local", "local": {"key_file": str(self.key_file)}}

    def config(self, **fields: Any) -> KmsConfig:
        return msgspec.convert({**self.section(), **fields}, KmsConfig)

    def build(self, target: KmsTarget, where: str) -> KmsBackend:
        return build_backend(target, where)


class AwsHarness(Harness):
    """AWS KMS: moto's server, reached through botocore's credential chain (env credentials)."""

    name = "aws"

    def section(self) -> dict[str, Any]:
        moto = self.request.getfixturevalue("moto_kms")
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            self.monkeypatch.delenv(var, raising=False)
        self.monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        self.monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        prefix = f"mh-{self.tmp_path.name[-12:]}-"  # one moto server per session: keys apart per test
        return {"backend": "aws", "key_prefix": prefix, "aws": {"region": "us-east-1", "endpoint": moto.url}}


class VaultHarness(Harness):
    """Vault Transit: a real OpenBao dev server."""

    name = "vault"

    def section(self) -> dict[str, Any]:
        bao = self.request.getfixturevalue("openbao")
        self.monkeypatch.setenv("MH_TEST_VAULT_TOKEN", bao.TOKEN)
        prefix = f"mh-{self.tmp_path.name[-12:]}-"
        return {
            "backend": "vault",
            "key_prefix": prefix,
            "vault": {"address": bao.url, "token_env": "MH_TEST_VAULT_TOKEN"},
        }


class AzureHarness(Harness):
    """Azure Key Vault: the simulator over TLS (self-signed, trusted through ca_file), with a static
    Entra token standing in for azure-identity."""

    name = "azure"

    def section(self) -> dict[str, Any]:
        self.kv = self.request.getfixturevalue("azure_kv")
        prefix = f"mh-{self.tmp_path.name[-12:]}-".replace("_", "-")
        # The SDK checks the challenge's resource (vault.azure.net) against the vault's host name,
        # which a loopback address cannot match: the one option a test must turn off.
        return {
            "backend": "azure",
            "key_prefix": prefix,
            "azure": {
                "vault_url": self.kv.url,
                "ca_file": str(self.kv.cert),
                "key_size": 2048,
                "verify_challenge_resource": False,
            },
        }

    def build(self, target: KmsTarget, where: str) -> KmsBackend:
        from multihome.crypto.backends.azure import AzureKms

        from .services import StaticToken

        assert target.azure is not None
        return AzureKms(target.azure, where=f"{where}.azure", credential=StaticToken(self.kv.TOKEN))


HARNESSES: dict[str, Callable[[Any, Any, Any], Harness]] = {
    "local": Harness,
    "aws": AwsHarness,
    "vault": VaultHarness,
    "azure": AzureHarness,
}


class Recording(KmsBackend):
    """Delegates to a real backend, counting calls and keeping every plaintext data key it saw
    (so tests can look for those bytes where they must never be)."""

    def __init__(self, inner: KmsBackend) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.calls: dict[str, int] = {}
        self.plaintexts: list[bytes] = []
        self.down = False
        self.refusing = False  # every call is refused (a destroyed key, access denied)
        self.hung = False  # every call waits forever (a KMS that accepted the connection and never answers)
        self.tried: dict[str, int] = {}  # calls made, answered or not

    @property
    def label(self) -> str:
        return self.inner.label

    async def _hang(self) -> None:
        if self.hung:
            await asyncio.Event().wait()

    def _count(self, op: str) -> None:
        self.tried[op] = self.tried.get(op, 0) + 1
        if self.refusing:
            from multihome.crypto import KmsRefused

            raise KmsRefused(self.label, "access denied (test refusal)")
        if self.down:
            from multihome.crypto import KmsUnavailable

            raise KmsUnavailable(self.label, "connection refused (test outage)")
        self.calls[op] = self.calls.get(op, 0) + 1

    async def generate_data_key(self, kek_id, context, *, create):
        await self._hang()
        self._count("generate")
        new = await self.inner.generate_data_key(kek_id, context, create=create)
        self.plaintexts.append(new.plaintext)
        return new

    async def decrypt(self, kek_id, kek_version, wrapped, context):
        await self._hang()
        self._count("decrypt")
        plaintext = await self.inner.decrypt(kek_id, kek_version, wrapped, context)
        self.plaintexts.append(plaintext)
        return plaintext

    async def rewrap(self, kek_id, kek_version, wrapped, context):
        await self._hang()
        self._count("rewrap")
        return await self.inner.rewrap(kek_id, kek_version, wrapped, context)

    async def create_key_version(self, kek_id):
        self._count("create_key_version")
        return await self.inner.create_key_version(kek_id)

    async def destroy(self, kek_id):
        self._count("destroy")
        return await self.inner.destroy(kek_id)

    async def close(self):
        await self.inner.close()


def secret_forms(plaintexts: list[bytes]) -> list[str]:
    """Every printable form a key could leak in: hex, base64, base64url."""
    forms = []
    for raw in plaintexts:
        forms += [raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]
    return forms
