"""KMS backends: `local` (a key file), `aws` (AWS KMS), `vault` (Vault/OpenBao Transit), `azure`
(Azure Key Vault). `build_backend` makes one from its config section; the SDK of a cloud backend is
imported only when that backend is configured."""

from __future__ import annotations

from ...config.kms import KmsTarget
from ..kms import KmsBackend


def build_backend(target: KmsTarget, where: str) -> KmsBackend:
    """The backend `target.backend` names, from its section (`where` is the config key path, for errors)."""
    if target.backend == "local":
        from .local import LocalKms

        return LocalKms(target.local.key_file)
    if target.backend == "aws":
        from .aws import AwsKms

        assert target.aws is not None  # config.kms.check refuses a backend without its section
        return AwsKms(target.aws, where=f"{where}.aws")
    if target.backend == "vault":
        from .vault import VaultKms

        assert target.vault is not None
        return VaultKms(target.vault, where=f"{where}.vault")
    from .azure import AzureKms

    assert target.azure is not None
    return AzureKms(target.azure, where=f"{where}.azure")
