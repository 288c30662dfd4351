"""A KMS that accepts the connection and never answers: each SDK's own timeouts and retries end
the call as `KmsUnavailable` within a few `kms.timeout_s`, so the worker thread behind the
keyring's deadline (tests/crypto/test_hot_path.py) does not linger for the SDK defaults (AWS ~45 s,
Azure's 10 retries with backoff: minutes)."""

from __future__ import annotations

import socket

import anyio
import msgspec
import pytest

from multihome.config.kms import AwsKmsConfig, AzureKmsConfig
from multihome.crypto import KmsUnavailable

from .services import StaticToken

pytestmark = pytest.mark.anyio


@pytest.fixture
def hung_port():
    """A port whose connections the kernel accepts (the listen backlog) and nobody ever answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


async def test_aws_sdk_gives_up_within_its_attempts(hung_port, monkeypatch):
    from multihome.crypto.backends.aws import AwsKms

    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    cfg = msgspec.convert({"region": "us-east-1", "endpoint": f"http://127.0.0.1:{hung_port}"}, AwsKmsConfig)
    kms = AwsKms(cfg, where="kms.aws", timeout_s=1, attempts=2)
    with anyio.fail_after(30), pytest.raises(KmsUnavailable) as exc:
        await kms.decrypt("alias/k", "", b"wrapped", {"tenant": "t"})
    assert "ReadTimeout" in str(exc.value)


async def test_azure_sdk_gives_up_within_its_attempts(hung_port):
    from multihome.crypto.backends.azure import AzureKms

    cfg = msgspec.convert(
        {"vault_url": f"https://127.0.0.1:{hung_port}", "verify_challenge_resource": False}, AzureKmsConfig
    )
    kms = AzureKms(cfg, where="kms.azure", credential=StaticToken("t"), timeout_s=1, attempts=2)
    try:
        with anyio.fail_after(30), pytest.raises(KmsUnavailable):
            await kms.decrypt(f"https://127.0.0.1:{hung_port}/keys/k", "v1", b"wrapped", {"tenant": "t"})
    finally:
        await kms.close()
