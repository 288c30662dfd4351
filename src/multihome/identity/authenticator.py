"""Turn a request's credential into a Principal: managed API keys, keys from the environment,
the bootstrap admin key, or an OIDC JWT. Served from memory; only a JWKS refresh touches the network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ..config import Config, env_secret
from ..schema.errors import ApiError
from ..schema.principal import MEMBER, ORG_ADMIN, Principal
from ..schema.request_headers import SCAN_MAX, index_of, repeated
from .oidc import looks_like_jwt


# A new error per refusal, never one module-level instance: raising an instance again appends every frame
# it passes through to its __traceback__, so a shared one would keep each refused request's frames (its
# scope, its call) alive for good: ~7 kB a request anyone without a key could send.
def _missing() -> ApiError:
    return ApiError(
        401,
        "Missing API key. Send 'Authorization: Bearer <key>' (the OpenAI SDKs do this from OPENAI_API_KEY) "
        "or 'x-api-key: <key>'.",
        code="invalid_api_key",
    )


def _invalid() -> ApiError:
    return ApiError(
        401,
        "Invalid API key: it is unknown, revoked or expired. Ask your tenant admin for a key.",
        code="invalid_api_key",
    )


TENANT_UNAVAILABLE = "tenant_unavailable"
_KEY_PRINCIPALS_KEPT = 100_000  # managed keys' principals kept (Authenticator._principal_of)
_ANONYMOUS = Principal(tenant="default", subject="anonymous", source="unauthenticated")


def credential_of(scope: dict) -> bytes | None:
    """The presented secret: `Authorization: Bearer <x>`, else `x-api-key: <x>`.

    A header sent twice is refused (400), never resolved by order: a proxy that checks the first
    and a gateway that takes the last would disagree on who is calling."""
    headers = scope["headers"]
    if len(headers) <= SCAN_MAX:  # a short list: scanned (schema/request_headers.py)
        authorization = api_key = None
        for name, value in headers:
            if name == b"authorization":
                if authorization is not None:
                    raise _twice("Authorization")
                authorization = value
            elif name == b"x-api-key":
                if api_key is not None:
                    raise _twice("x-api-key")
                api_key = value
        return _secret(authorization, api_key)
    index = index_of(scope)
    authorization, api_key = index.get(b"authorization"), index.get(b"x-api-key")
    if len(index) != len(headers) and (  # some header name sent twice: was it a credential's?
        (authorization is not None and repeated(scope, b"authorization"))
        or (api_key is not None and repeated(scope, b"x-api-key"))
    ):
        raise _first_repeated(scope)
    return _secret(authorization, api_key)


def _secret(authorization: bytes | None, api_key: bytes | None) -> bytes | None:
    if authorization is not None and authorization[:7].lower() == b"bearer ":
        return authorization[7:].strip() or None
    if api_key is not None:
        return api_key.strip() or None
    return None


def _first_repeated(scope: dict) -> ApiError:
    """The refusal for the credential header whose second copy comes first."""
    seen: set[bytes] = set()
    for name, _ in scope["headers"]:
        if name in (b"authorization", b"x-api-key"):
            if name in seen:
                return _twice("Authorization" if name == b"authorization" else "x-api-key")
            seen.add(name)
    raise AssertionError("no credential header is repeated")


def _twice(header: str) -> ApiError:
    return ApiError(
        400,
        f"The request has more than one '{header}' header. Send exactly one credential: one "
        f"'{header}' header with one key or token.",
        param=header.lower(),
        code="duplicate_credentials",
    )


class Refusals(Protocol):
    """Who is refused because a stored row cannot be read (storage.service.StorageService)."""

    refused: Mapping[str | None, str]  # tenant id -> why; None: every OIDC token
    # The tenants (None: every tenant) with a token revocation that cannot be read: their OIDC tokens may be
    # revoked, so they stay refused in the admin API too.
    tokens_refused: frozenset[str | None]


class TenantRefused(ApiError):
    """403 `tenant_unavailable`: a stored row of the caller's tenant cannot be read. `principal` is the
    caller if the admin API may still serve it (to read and mend the row, api/admin/refusals.py): an API
    key, or a token no unreadable token revocation may hold; else None."""

    def __init__(self, message: str, principal: Principal | None) -> None:
        super().__init__(403, message, type="permission_error", code=TENANT_UNAVAILABLE)
        self.principal = principal


def principal_of_key(record: Any) -> Principal:
    """A managed key record (storage.records.KeyRecord) as the caller it identifies."""
    return Principal(
        tenant=record.tenant_id,
        subject=record.id,
        source="api_key",
        team=record.team_id,
        key_id=record.id,
        roles=frozenset(record.roles),
        scopes_models=frozenset(record.scopes_models) if record.scopes_models is not None else None,
        scopes_endpoints=frozenset(record.scopes_endpoints) if record.scopes_endpoints is not None else None,
    )


class Authenticator:
    def __init__(
        self,
        env_keys: dict[bytes, Principal],
        *,
        managed: Callable[[str], Any] | None = None,
        managed_miss: Callable[[], Awaitable[bool]] | None = None,
        oidc=None,
        open_access: bool = False,
        refusals: Refusals | None = None,
    ) -> None:
        self._env_keys = env_keys  # SHA-256 digest -> principal
        self._managed = managed  # presented key -> KeyRecord | None (storage's KeyIndex.lookup)
        self._managed_miss = managed_miss  # re-reads stored keys after a miss; True if it did
        # key id -> (the record, its principal): a key's principal is made once per record a reload reads, not
        # per call (what it carries, e.g. `read_only`, is computed once per credential).
        self._key_principals: dict[str, tuple[Any, Principal]] = {}
        self._oidc = oidc  # identity.oidc.OidcVerifier
        # Tenants whose stored rows cannot be read (storage's StorageService); key None: every token.
        self._refusals = refusals
        self._open = open_access and not env_keys and managed is None and oidc is None

    @property
    def open_access(self) -> bool:
        return self._open

    @classmethod
    def from_config(cls, config: Config, *, managed=None, managed_miss=None, oidc=None, refusals=None) -> Authenticator:
        env_keys: dict[bytes, Principal] = {}
        tenant = config.identity.static_keys_tenant
        for i, var in enumerate(config.server.api_keys_env):
            secret = env_secret(var, what=f"server.api_keys_env[{i}]")
            env_keys[_digest(secret.encode())] = Principal(
                tenant=tenant, subject=f"env:{var}", source="static", roles=frozenset({MEMBER})
            )
        admin = env_secret(config.identity.admin_key_env, what="identity.admin_key_env")
        if admin:
            env_keys[_digest(admin.encode())] = Principal(
                tenant="*", subject="bootstrap-admin", source="static", roles=frozenset({ORG_ADMIN})
            )
        return cls(
            env_keys,
            managed=managed,
            managed_miss=managed_miss,
            oidc=oidc,
            open_access=config.server.allow_unauthenticated,
            refusals=refusals,
        )

    def at_once(self, scope: dict) -> Principal | None:
        """`authenticate`'s answer when it needs no await (open access, a key from the environment, or a
        401 or 400), else None: a managed key or a token, for `authenticate`. The gateway's hot path asks
        this first, so a key from the environment costs no coroutine."""
        if self._open:
            return _ANONYMOUS
        credential = credential_of(scope)
        if credential is None:
            raise _missing()
        if (credential.startswith(b"mh_") and self._managed is not None) or (
            self._oidc is not None and looks_like_jwt(credential)
        ):
            return None
        principal = self._env_keys.get(_digest(credential))
        if principal is None:
            raise _invalid()
        return principal

    def _principal_of(self, record: Any) -> Principal:
        """`principal_of_key(record)`, made again only when a reload has replaced the key's record."""
        known = self._key_principals.get(record.id)
        if known is not None and known[0] is record:
            return known[1]
        if len(self._key_principals) >= _KEY_PRINCIPALS_KEPT:  # keys deleted since stay behind: start over
            self._key_principals.clear()
        principal = principal_of_key(record)
        self._key_principals[record.id] = (record, principal)
        return principal

    async def authenticate(self, scope: dict) -> Principal:
        principal = self.at_once(scope)
        return principal if principal is not None else await self.deferred(scope)

    async def deferred(self, scope: dict) -> Principal:
        """A managed key or a token: what `at_once` answered None for."""
        credential = credential_of(scope)
        assert credential is not None  # at_once raised for none
        if credential.startswith(b"mh_") and self._managed is not None:
            presented = credential.decode("ascii", "replace")
            record = self._managed(presented)
            if record is None and self._managed_miss is not None and await self._managed_miss():
                record = self._managed(presented)  # created moments ago on another replica
            if record is None:
                raise _invalid()
            principal = self._principal_of(record)
            if self._refusals is not None and self._refusals.refused:  # empty unless a stored row is unreadable
                check_refused(self._refusals, principal, token=False)
            return principal
        assert self._oidc is not None  # at_once answered every other credential
        # Verified (or remembered) and checked against the live token revocations, every request.
        principal = await self._oidc.verify(credential)
        if self._refusals is not None and self._refusals.refused:
            check_refused(self._refusals, principal, token=True)
        return principal

    def token_facts(self, scope: dict) -> dict[str, Any] | None:
        """The issuer, jti and iat of the OIDC token this request was identified by (None for a key): kept
        with work it queues, which a revocation of that token stops (identity/stored_caller.py)."""
        credential = credential_of(scope)
        if credential is None or self._oidc is None or not looks_like_jwt(credential):
            return None
        facts: dict[str, Any] | None = self._oidc.facts(credential)
        return facts

    async def admin(self, scope: dict) -> Principal:
        """`authenticate` for the admin API and the console: a caller whose tenant is refused because a stored
        row cannot be read is let in, for the admin API to narrow what it may do (api/admin/refusals.py: read
        and mend the row), unless its credential is a token an unreadable token revocation may hold."""
        try:
            return await self.authenticate(scope)
        except TenantRefused as refused:
            if refused.principal is None:
                raise
            return refused.principal


def check_refused(refusals: Refusals, principal: Principal, *, token: bool) -> None:
    """Fail closed: a stored row of this tenant (or an org-wide token revocation) cannot be read, and it
    may hold a restriction, so the caller is refused until an operator fixes it (docs/storage.md)."""
    refused, tenant = refusals.refused, principal.tenant
    why = refused.get(tenant)
    # Only a token revocation restricts who may call at all: an API key, or a token none may hold, is the caller.
    held = token and (tenant in refusals.tokens_refused or None in refusals.tokens_refused)
    caller = None if held else principal
    if why is not None:
        raise TenantRefused(
            f"Tenant {tenant}'s stored configuration cannot be read ({why}), so its calls are refused until an "
            "operator fixes the row; other tenants are not affected.",
            caller,
        )
    if token and None in refused:
        raise TenantRefused(
            f"A stored token revocation that applies to every tenant cannot be read ({refused[None]}), so every "
            "token is refused until an operator fixes the row; API keys are not affected.",
            caller,
        )


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()
