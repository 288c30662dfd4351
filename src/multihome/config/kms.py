"""The `kms:` config section: which KMS holds the key-encryption keys that wrap every tenant's
data keys (docs/encryption.md). Absent section = the `local` backend with its key file.

The organisation picks one backend; a tenant may bring its own (`tenants.<id>`: another backend,
or another key in the same one). Secrets (a Vault token, an Azure client secret) are only ever
named by environment variable (`*_env`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

import msgspec

from .struct import NonNegative, Positive, PositiveCount, Strict

BACKENDS = ("local", "aws", "vault", "azure")
# A KMS operation (with its retries) that has not answered by `timeout_s` fails as unavailable (503).
DEFAULT_TIMEOUT_S = 5.0
MAX_TIMEOUT_S = 60.0
DEFAULT_ATTEMPTS = 2
MAX_ATTEMPTS = 5
# AES-GCM with random 96-bit nonces: at most 2^32 messages per key; retire data keys far earlier.
GCM_MESSAGE_LIMIT = 2**32


class LocalKmsConfig(Strict):
    key_file: str = "multihome-kms.key"  # JSON, mode 0600; `multihome kms init` creates it


class AwsKmsConfig(Strict):
    region: str
    endpoint: str | None = None  # default: botocore's (https://kms.<region>.amazonaws.com)
    # Unset fields fall back to botocore's standard credential chain (env, profile, IMDS...).
    profile: str | None = None
    role_arn: str | None = None
    role_session_name: str = "multihome-kms"
    external_id_env: str | None = None
    # Per-tenant keys are made with CreateKey; a shred disables them and schedules their deletion.
    deletion_window_days: Annotated[int, msgspec.Meta(ge=7, le=30)] = 7


class VaultKmsConfig(Strict):
    address: str  # http(s)://host:8200
    token_env: str  # the Vault token (policy: transit datakey/decrypt/rewrap/keys on `mount`)
    mount: str = "transit"
    namespace: str | None = None  # X-Vault-Namespace
    ca_file: str | None = None  # PEM bundle to trust for https
    timeout_s: Positive | None = None  # per HTTP request; None: `kms.timeout_s` (capped by it anyway)


class AzureKmsConfig(Strict):
    vault_url: str  # https://<vault>.vault.azure.net
    # With no ids, azure-identity's DefaultAzureCredential chain is used (managed identity, env, CLI...).
    tenant_id_env: str | None = None
    client_id_env: str | None = None
    client_secret_env: str | None = None
    key_size: Literal[2048, 3072, 4096] = 3072  # RSA keys created for tenants; wrap is RSA-OAEP-256
    ca_file: str | None = None  # PEM bundle to trust (a private endpoint behind its own CA)
    # Key Vault's auth challenge names the resource; the SDK checks it matches the vault's domain.
    verify_challenge_resource: bool = True
    timeout_s: Positive | None = None  # connect and read, per request; None: `kms.timeout_s` (capped by it)


class KmsTarget(Strict):
    backend: Literal["local", "aws", "vault", "azure"] = "local"
    # The KEK to use. None: one KEK per tenant, named `key_prefix` + tenant and created on first use
    # (a shred destroys it). Set: every tenant here shares this key (AWS: key id, ARN or alias).
    key_id: str | None = None
    key_prefix: str = "multihome-"
    local: LocalKmsConfig = msgspec.field(default_factory=LocalKmsConfig)
    aws: AwsKmsConfig | None = None
    vault: VaultKmsConfig | None = None
    azure: AzureKmsConfig | None = None
    # The deadline of one KMS operation, retries included: past it the call fails as unavailable
    # (a 503 `kms_unavailable`; cached keys keep serving). None: the organisation's, else 5 s.
    timeout_s: Positive | None = None
    attempts: PositiveCount | None = None  # tries per KMS request (1 = no retry); None: as timeout_s, else 2


class KmsConfig(KmsTarget):
    # A tenant bringing its own key: tenant id -> its backend and key (same fields as above).
    tenants: dict[str, KmsTarget] = msgspec.field(default_factory=dict)
    cache_ttl_s: Positive = 300.0  # an unwrapped data key is reused this long before the KMS is asked again
    cache_max_keys: PositiveCount = 10_000
    # KMS down when a cached key's TTL ends: keep using it this much longer (0: fail at once).
    serve_stale_s: NonNegative = 3600.0
    # Seals per data key before it is retired and a new one made (GCM's bound is 2^32).
    max_messages_per_key: PositiveCount = 2**30
    reserve_block: PositiveCount = 4096  # seal counts reserved in the database at a time
    # Payloads at least this large are sealed/opened in a worker thread: below it AES-GCM blocks the loop
    # for less than ~75 µs, while a worker-thread round trip costs ~200 µs (bench/crypto_bench.py).
    offload_bytes: PositiveCount = 256 * 1024


def bounded(org: KmsConfig, target: KmsTarget) -> KmsTarget:
    """`target` with its deadline and attempts filled in: its own, else the organisation's, else the defaults."""
    timeout_s = target.timeout_s or org.timeout_s or DEFAULT_TIMEOUT_S
    attempts = target.attempts or org.attempts or DEFAULT_ATTEMPTS
    return msgspec.structs.replace(target, timeout_s=timeout_s, attempts=attempts)


def check(cfg: KmsConfig) -> Iterator[str]:
    """Cross-field problems as `kms.<path>: what is wrong`."""
    if cfg.max_messages_per_key > GCM_MESSAGE_LIMIT // 4:
        yield (
            f"kms.max_messages_per_key: at most {GCM_MESSAGE_LIMIT // 4} (AES-GCM with random nonces allows "
            "2^32 messages per key; data keys are retired well before)"
        )
    targets = [("kms", cfg), *((f"kms.tenants.{t}", target) for t, target in cfg.tenants.items())]
    for where, target in targets:
        if target.timeout_s is not None and target.timeout_s > MAX_TIMEOUT_S:
            yield (
                f"{where}.timeout_s: at most {MAX_TIMEOUT_S:g} (a client waits this long for a KMS that does not "
                "answer; a few seconds is usual)"
            )
        if target.attempts is not None and target.attempts > MAX_ATTEMPTS:
            yield f"{where}.attempts: at most {MAX_ATTEMPTS} (every try shares the one timeout_s deadline)"
        if target.backend != "local" and getattr(target, target.backend) is None:
            yield f"{where}.{target.backend}: required when {where}.backend is {target.backend}"
        if target.vault is not None and not target.vault.address.startswith(("http://", "https://")):
            yield f"{where}.vault.address: must start with http:// or https://"
        if target.azure is not None and not target.azure.vault_url.startswith("https://"):
            yield f"{where}.azure.vault_url: must start with https:// (Key Vault only speaks TLS)"
        if (
            target.aws is not None
            and target.aws.endpoint is not None
            and not target.aws.endpoint.startswith(("http://", "https://"))
        ):
            yield f"{where}.aws.endpoint: must start with http:// or https://"
        if target.key_id is None and not target.key_prefix:
            yield f"{where}.key_prefix: must not be empty when key_id is unset (per-tenant keys)"
