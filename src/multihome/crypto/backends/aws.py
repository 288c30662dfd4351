"""The `aws` KMS: AWS KMS GenerateDataKey / Decrypt / ReEncrypt with an EncryptionContext, through
botocore's credential chain (env, profile, IMDS, an assumed role: the same chain the Bedrock
adapter uses). botocore is synchronous, so each call runs in a worker thread; calls are rare (the
keyring caches unwrapped keys).

KEK names: a key id, key ARN, alias ARN or `alias/...` is used as given; a bare name (the
per-tenant `multihome-<tenant>`) is the alias `alias/<name>`. A per-tenant key is made with
CreateKey + CreateAlias on first use; a shred disables it, schedules its deletion (the pending
window is AWS's, 7-30 days; the key is unusable from the moment it is disabled) and drops the
alias. AWS hides key versions: a rotation (RotateKeyOnDemand) keeps the key id, so the version
recorded is the KeyMaterialId where the API returns one, else "".
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import botocore.session
from botocore.config import Config as BotoConfig
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from ...config.kms import AwsKmsConfig
from ...providers import botocore_logs
from ..errors import KmsRefused, KmsUnavailable
from ..kms import KmsBackend, NewDataKey, Rewrapped
from .secrets import required_env

_KEY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$|^mrk-[0-9a-f]{32}$")
_UNAVAILABLE = frozenset(
    {
        "DependencyTimeoutException",
        "KMSInternalException",
        "KeyUnavailableException",
        "ThrottlingException",
        "LimitExceededException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "RequestLimitExceeded",
        "CustomKeyStoreInvalidStateException",
    }
)


def key_ref(kek_id: str) -> str:
    """What KeyId to send: ids, ARNs and `alias/...` as given; a bare name is an alias."""
    if kek_id.startswith(("alias/", "arn:")) or _KEY_ID.match(kek_id):
        return kek_id
    return f"alias/{kek_id}"


class AwsKms(KmsBackend):
    name: ClassVar[str] = "aws"

    def __init__(self, cfg: AwsKmsConfig, *, where: str, timeout_s: float = 5.0, attempts: int = 2) -> None:
        self._cfg = cfg
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._where = where
        self._client: Any = None
        self._lock = threading.Lock()
        botocore_logs.install()  # its DEBUG log: the plaintext data keys, the assumed role's credentials

    @property
    def label(self) -> str:
        return f"AWS KMS ({self._cfg.region}{' at ' + self._cfg.endpoint if self._cfg.endpoint else ''})"

    def _kms(self) -> Any:
        """The botocore client, made once (worker thread: the chain may read files or call IMDS / STS)."""
        with self._lock:
            if self._client is None:
                cfg = self._cfg
                session = botocore.session.Session(profile=cfg.profile)
                # The STS client that assumes `role_arn` is made from this session: without a region of its own
                # (no AWS_REGION in the environment, as on an EC2 host) it had none, a NoRegionError on every call.
                session.set_config_variable("region", cfg.region)
                if cfg.role_arn:
                    source = session.get_credentials()
                    if source is None:
                        raise NoCredentialsError()
                    extra = {"RoleSessionName": cfg.role_session_name}
                    if cfg.external_id_env:
                        extra["ExternalId"] = required_env(cfg.external_id_env, what=f"{self._where}.external_id_env")
                    fetcher = AssumeRoleCredentialFetcher(session.create_client, source, cfg.role_arn, extra_args=extra)
                    # botocore's Session.get_credentials() returns `_credentials` when set: the assumed role.
                    session._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
                        refresh_using=fetcher.fetch_credentials, method="assume-role"
                    )
                self._client = session.create_client(
                    "kms",
                    region_name=cfg.region,
                    endpoint_url=cfg.endpoint,
                    # Each try may take the whole deadline; the keyring cuts the operation there, and
                    # these bound how long the worker thread lingers after it (attempts x timeout).
                    config=BotoConfig(
                        connect_timeout=self._timeout_s,
                        read_timeout=self._timeout_s,
                        retries={"total_max_attempts": self._attempts, "mode": "standard"},
                    ),
                )
            return self._client

    def _call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self._kms(), op)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = exc.response.get("Error", {}).get("Message", "")[:300]
            if code in _UNAVAILABLE or status >= 500:
                raise KmsUnavailable(self.label, f"{op}: {code} {message}".strip()) from None
            raise KmsRefused(self.label, f"{op}: {code} {message}".strip()) from None
        except NoCredentialsError:
            raise KmsRefused(
                self.label,
                "botocore's credential chain found no credentials "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role)",
            ) from None
        except (BotoConnectionError, BotoCoreError) as exc:
            raise KmsUnavailable(self.label, f"{op}: {type(exc).__name__}") from None

    async def _run(self, op: str, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self._call, op, **kwargs)

    async def generate_data_key(self, kek_id: str, context: Mapping[str, str], *, create: bool) -> NewDataKey:
        ref = key_ref(kek_id)
        try:
            out = await self._run("generate_data_key", KeyId=ref, KeySpec="AES_256", EncryptionContext=dict(context))
        except KmsRefused as exc:
            if not (create and "NotFoundException" in str(exc) and ref.startswith("alias/")):
                raise
            await self._create(ref)
            out = await self._run("generate_data_key", KeyId=ref, KeySpec="AES_256", EncryptionContext=dict(context))
        return NewDataKey(out["Plaintext"], out["CiphertextBlob"], out["KeyId"], out.get("KeyMaterialId", ""))

    async def _create(self, alias: str) -> None:
        key = await self._run(
            "create_key",
            Description=f"Multihome key-encryption key {alias}",
            KeyUsage="ENCRYPT_DECRYPT",
            KeySpec="SYMMETRIC_DEFAULT",
            Tags=[{"TagKey": "multihome:kek", "TagValue": alias[len("alias/") :]}],
        )
        try:
            await self._run("create_alias", AliasName=alias, TargetKeyId=key["KeyMetadata"]["KeyId"])
        except KmsRefused as exc:  # another replica made it first: use theirs, drop ours
            if "AlreadyExistsException" not in str(exc):
                raise
            await self._run(
                "schedule_key_deletion",
                KeyId=key["KeyMetadata"]["KeyId"],
                PendingWindowInDays=self._cfg.deletion_window_days,
            )

    async def decrypt(self, kek_id: str, kek_version: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        out = await self._run("decrypt", CiphertextBlob=wrapped, KeyId=kek_id, EncryptionContext=dict(context))
        return out["Plaintext"]

    async def rewrap(self, kek_id: str, kek_version: str, wrapped: bytes, context: Mapping[str, str]) -> Rewrapped:
        out = await self._run(
            "re_encrypt",
            CiphertextBlob=wrapped,
            SourceKeyId=kek_id,
            SourceEncryptionContext=dict(context),
            DestinationKeyId=kek_id,
            DestinationEncryptionContext=dict(context),
        )
        return Rewrapped(out["CiphertextBlob"], out.get("DestinationKeyMaterialId", ""))

    async def create_key_version(self, kek_id: str) -> str:
        # RotateKeyOnDemand takes a key id or ARN only, not an alias.
        key_id = (await self._run("describe_key", KeyId=key_ref(kek_id)))["KeyMetadata"]["KeyId"]
        await self._run("rotate_key_on_demand", KeyId=key_id)
        return ""

    async def destroy(self, kek_id: str) -> None:
        ref = key_ref(kek_id)
        try:
            key_id = (await self._run("describe_key", KeyId=ref))["KeyMetadata"]["KeyId"]
        except KmsRefused as exc:
            if "NotFoundException" in str(exc):
                return  # never made, or already gone
            raise
        await self._run("disable_key", KeyId=key_id)
        await self._run("schedule_key_deletion", KeyId=key_id, PendingWindowInDays=self._cfg.deletion_window_days)
        if ref.startswith("alias/"):
            await self._run("delete_alias", AliasName=ref)
