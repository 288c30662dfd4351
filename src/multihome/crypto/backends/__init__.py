"""KMS backends: `local` (a key file), `aws` (AWS KMS), `vault` (Vault/OpenBao Transit), `azure`
(Azure Key Vault). `build_backend` makes one from its config section; the SDK of a cloud backend is
imported only when that backend is configured."""

from __future__ import annotations

from ...config.kms import DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT_S, KmsTarget
from ..kms import KmsBackend


def build_backend(target: KmsTarget, where: str) -> KmsBackend:
    """The backend `target.backend` names, from its section (`where` is the config key path, for errors).
    Its SDK's timeouts and retries fit in `target.timeout_s` (the keyring enforces that deadline)."""
    timeout_s = target.timeout_s or DEFAULT_TIMEOUT_S
    attempts = target.attempts or DEFAULT_ATTEMPTS
    if target.backend == "local":
        from .local import LocalKms

        return LocalKms(target.local.key_file)
    if target.backend == "aws":
        from .aws import AwsKms

        assert target.aws is not None  # config.kms.check refuses a backend without its section
        return AwsKms(target.aws, timeout_s=timeout_s, attempts=attempts, where=f"{where}.aws")
    if target.backend == "vault":
        from .vault import VaultKms

        assert target.vault is not None
        return VaultKms(target.vault, timeout_s=timeout_s, attempts=attempts, where=f"{where}.vault")
    from .azure import AzureKms

    assert target.azure is not None
    return AzureKms(target.azure, timeout_s=timeout_s, attempts=attempts, where=f"{where}.azure")
