"""What sealing and opening can fail with: one exception type per thing a caller must tell apart.

None of them ever carries key bytes, wrapped or not: messages name tenants' data keys by id, KMS
keys by id and version, and the KMS by its label (the API layer turns `KmsUnavailable` into a 503
that names it).
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every envelope-encryption error."""


class MalformedCiphertext(CryptoError):
    """The bytes are not a Multihome envelope (wrong magic, unknown format version, truncated)."""


class CiphertextMismatch(CryptoError):
    """The envelope does not open under the binding asked for: it was modified, or it was sealed
    for another record (table, record id) and copied here."""


class WrongBinding(CiphertextMismatch):
    """The envelope's data key belongs to another tenant or purpose than the one opening it."""


class DataKeyNotFound(CryptoError):
    """The envelope names a data key that is not stored: the tenant was shredded, or the envelope
    never came from this database."""


class KmsError(CryptoError):
    """A KMS call failed. `kms` names the KMS (backend and where it is), never a secret."""

    def __init__(self, kms: str, message: str) -> None:
        super().__init__(f"{kms}: {message}")
        self.kms = kms


class KmsUnavailable(KmsError):
    """The KMS could not be reached or answered with a server error or throttling: try later.
    Keys already cached keep serving; a seal that needs a new data key fails closed with this."""


class KmsRefused(KmsError):
    """The KMS answered and said no: unknown or destroyed key, disabled key version, denied access,
    a wrapped key that does not decrypt under its context."""
