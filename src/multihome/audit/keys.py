"""Ed25519 keys for signed checkpoints (the `cryptography` package).

A private key comes from a PEM file or an environment variable holding either PEM text or the raw
32-byte seed in base64. A key id names the public key so `verify` can pick the right one after a
rotation; by default it is derived from the public key itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyError_(ValueError):
    """A key that cannot be loaded; the message says which setting and why (never the key)."""


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def private_from_text(text: str | bytes, what: str) -> Ed25519PrivateKey:
    data = text.encode() if isinstance(text, str) else text
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyError_(f"{what}: not a readable unencrypted PEM private key ({exc.__class__.__name__})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyError_(f"{what}: the PEM key is not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw_key(data, what, "key"))


def _raw_key(data: bytes, what: str, kind: str) -> bytes:
    """The 32 raw bytes of a base64-encoded Ed25519 key."""
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyError_(f"{what}: neither PEM nor base64") from None
    if len(raw) != 32:
        raise KeyError_(f"{what}: a raw Ed25519 {kind} is 32 bytes, this decodes to {len(raw)}")
    return raw


def load_signing_key(file: str | None, env: str | None) -> Ed25519PrivateKey | None:
    if file and env:
        raise KeyError_("audit: set signing_key_file or signing_key_env, not both")
    if file:
        try:
            with open(file, "rb") as f:
                return private_from_text(f.read(), f"audit.signing_key_file ({file})")
        except OSError as exc:
            raise KeyError_(f"audit.signing_key_file: cannot read {file} ({exc.strerror})") from None
    if env:
        value = os.environ.get(env)
        if not value:
            raise KeyError_(f"audit.signing_key_env: environment variable {env} is not set")
        return private_from_text(value, f"audit.signing_key_env ({env})")
    return None


def public_from_text(data: bytes, what: str) -> Ed25519PublicKey:
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            # A private key file also yields its public half.
            return private_from_text(data, what).public_key()
        if not isinstance(key, Ed25519PublicKey):
            raise KeyError_(f"{what}: not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw_key(data, what, "public key"))


def load_public_key(path: str) -> Ed25519PublicKey:
    try:
        with open(path, "rb") as f:
            return public_from_text(f.read(), path)
    except OSError as exc:
        raise KeyError_(f"cannot read public key {path} ({exc.strerror})") from None


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def verify(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
        return True
    except InvalidSignature:
        return False
