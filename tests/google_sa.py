"""Google service-account files for tests that drive google-auth's real JWT-bearer flow against a
local token endpoint (the vertex_anthropic simulator's POST /token, or a test's own)."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SA_EMAIL = "gateway@proj-1.iam.gserviceaccount.com"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def service_account_info(key: rsa.RSAPrivateKey, token_uri: str, email: str = SA_EMAIL) -> dict[str, str]:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "proj-1",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": email,
        "client_id": "1",
        "token_uri": token_uri,
    }


def service_account_file(path: Path, key: rsa.RSAPrivateKey, token_uri: str) -> Path:
    path.write_text(json.dumps(service_account_info(key, token_uri)))
    return path
