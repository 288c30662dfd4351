"""The one interface every KMS backend implements, and what its calls return.

A backend wraps and unwraps 32-byte data keys under a key-encryption key (KEK) that never leaves
the KMS (the `local` backend's key file stands in for one). `context` is the encryption context
the KMS binds the wrapped key to where it can (AWS EncryptionContext, Vault derived-key context,
the local backend's associated data); unwrapping with another context fails.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar, NamedTuple


class NewDataKey(NamedTuple):
    plaintext: bytes  # 32 bytes; held only in the key cache, never stored or logged
    wrapped: bytes
    kek_id: str  # the KMS's canonical id of the KEK (an AWS key ARN even when an alias was asked for)
    kek_version: str


class Rewrapped(NamedTuple):
    wrapped: bytes
    kek_version: str


class KmsBackend(abc.ABC):
    """Async KMS operations. Implementations map transport failures, throttling and 5xx to
    `KmsUnavailable` and every other refusal to `KmsRefused`, with messages free of key bytes."""

    name: ClassVar[str]  # "local" | "aws" | "vault" | "azure"

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """Names this KMS in errors and audit events (backend and where it is; no credentials)."""

    @abc.abstractmethod
    async def generate_data_key(self, kek_id: str, context: Mapping[str, str], *, create: bool) -> NewDataKey:
        """A fresh AES-256 data key and its wrapped form. `create`: make the KEK first if it does not
        exist (a per-tenant key Multihome owns); otherwise a missing KEK is `KmsRefused`."""

    @abc.abstractmethod
    async def decrypt(self, kek_id: str, kek_version: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """The plaintext data key (unwrap)."""

    @abc.abstractmethod
    async def rewrap(self, kek_id: str, kek_version: str, wrapped: bytes, context: Mapping[str, str]) -> Rewrapped:
        """The data key wrapped under the KEK's newest version (the plaintext stays in the KMS where it can)."""

    @abc.abstractmethod
    async def create_key_version(self, kek_id: str) -> str:
        """Rotate: a new KEK version for new wraps; older versions keep unwrapping. Returns it."""

    @abc.abstractmethod
    async def destroy(self, kek_id: str) -> None:
        """Make every version of the KEK unusable for good (crypto-shredding)."""

    async def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release
        """Release connections (default: nothing to release)."""
