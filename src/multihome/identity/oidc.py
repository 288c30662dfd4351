"""OIDC / JWT bearer tokens from trusted issuers -> Principal.

The issuer is chosen by the token's (unverified) `iss`, matched exactly against the configured
issuers; everything after that is PyJWT's `jwt.decode` with the algorithm pinned to the issuer's
list, the audience, the issuer, the leeway and exp/iat required, using a key from that issuer's
JWKS (jwks.py). Verification is CPU work of tens of microseconds, done inline; key fetches happen
off the request path except for the one request that finds a key missing.

Errors are 401 (403 when a genuine token entitles its bearer to nothing) in OpenAI's envelope,
each saying what is wrong; none repeats any part of the token.

Revocation: every accepted token, first seen or remembered, is checked against the live token
revocations (`revocations()`, the storage snapshot's RevocationIndex) by (iss, jti) and by
(iss, subject, iat): two dictionary lookups, none while no revocation is live.

Tenants: with storage, every accepted token's tenant must be a stored tenant (`tenants()`, the
snapshot's tenants by id): one dictionary lookup per request, so a deleted (offboarded) tenant's
tokens are refused on every replica once its snapshot has the deletion. A tenant this replica does
not know may have been created moments ago on another one: `tenants_miss()` re-reads the snapshot
(single-flight and rate-limited, shared with unknown API keys) before the token is refused.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Container, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt
from jwt import exceptions as jwt_errors

from ..config.oidc import IssuerConfig, check_issuers
from ..schema.errors import ApiError
from ..schema.principal import Principal
from .claims import forbidden, principal_from_claims
from .jwks import JwksCache

if TYPE_CHECKING:
    from jwt.types import Options

    from ..storage.revocations import RevocationIndex

log = logging.getLogger("multihome.identity.oidc")

MAX_TOKEN_BYTES = 16 * 1024
_JWT_SHAPE = re.compile(rb"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_REQUIRED = ["exp", "iat", "iss", "aud"]
_UNAUTHORIZED = {"www-authenticate": 'Bearer error="invalid_token"'}
# RFC 7519 NumericDate claims. Each must be a JSON number of a date up to 9999-12-31T23:59:59Z: PyJWT's
# int() takes "123" and true, and an integer no float holds passed its checks and then broke ours (a 500).
_DATES = ("exp", "nbf", "iat")
_MAX_DATE = 253402300799


def looks_like_jwt(credential: bytes | str) -> bool:
    """True for a compact JWS (three base64url segments, a JSON header): send it to verify();
    anything else is an API key. Unsigned (`alg: none`) tokens count, so they get a clear refusal, and so do
    tokens over MAX_TOKEN_BYTES: verify() refuses them as such (`malformed_token`), where taken for an API
    key they were told "invalid API key". (The shape check is linear; the server bounds a header's size.)"""
    if isinstance(credential, str):
        credential = credential.encode("ascii", "replace")
    return _JWT_SHAPE.match(credential) is not None


def _unauthorized(message: str, code: str) -> ApiError:
    return ApiError(401, message, code=code, headers=_UNAUTHORIZED)


# Each refusal raises a new error, never a module-level instance: raising one instance again appends every
# frame it passes through to its __traceback__, keeping each refused request's frames alive for good.
def _malformed() -> ApiError:
    return _unauthorized("The bearer token is not a well-formed JWT.", "malformed_token")


def _bad_dates() -> ApiError:
    return _unauthorized("The token's claims are malformed (exp, nbf, iat must be numbers).", "malformed_token")


def _dates_ok(claims: dict[str, Any]) -> bool:
    """Every NumericDate claim present is a JSON number within a date's range (before any key is fetched)."""
    for name in _DATES:
        value = claims.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not -_MAX_DATE <= value <= _MAX_DATE
        ):
            return False
    return True


def _too_large() -> ApiError:
    return _unauthorized(f"The bearer token is larger than {MAX_TOKEN_BYTES} bytes.", "malformed_token")


def _unknown_issuer() -> ApiError:
    return _unauthorized(
        "The token's issuer (iss) is not one this gateway trusts; see identity.oidc in the gateway config.",
        "unknown_issuer",
    )


def untrusted_issuer() -> ApiError:
    """Queued work whose token's issuer this gateway no longer trusts (identity.oidc changed since)."""
    return _unauthorized(
        "The identity provider whose token created this work is no longer trusted by this gateway "
        "(identity.oidc), so the work is not run further: no model is called for it.",
        "unknown_issuer",
    )


def _unknown_tenant() -> ApiError:
    return ApiError(
        403,
        "The token's tenant is not a tenant of this gateway: it is unknown or has been offboarded. Ask your "
        "administrator to create the tenant, or to map your identity provider's tenant to an existing one.",
        type="permission_error",
        code="unknown_tenant",
    )


def _revoked(revocation_id: str) -> ApiError:
    return _unauthorized(
        f"The token has been revoked by an administrator of this gateway (revocation {revocation_id}). "
        "Sign in again for a new token; if that one is refused too, ask your administrator.",
        "token_revoked",
    )


def _jti_of(payload: dict) -> str | None:
    jti = payload.get("jti")
    if isinstance(jti, str):
        return jti
    if isinstance(jti, int) and not isinstance(jti, bool):
        return str(jti)
    return None  # absent (or not an identifier): the token can be revoked by subject only


def _iat_of(payload: dict) -> float | None:
    iat = payload.get("iat")  # required and checked numeric by jwt.decode; None only if that changes
    return float(iat) if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None


class _Issuer:
    __slots__ = ("cfg", "keys", "audiences", "options")

    def __init__(self, cfg: IssuerConfig, keys: JwksCache) -> None:
        self.cfg = cfg
        self.keys = keys
        self.audiences = list(cfg.audiences)
        self.options: Options = {"require": _REQUIRED, "enforce_minimum_key_length": True}


class OidcVerifier:
    """Verifies bearer JWTs from several issuers. start()/close() follow the gateway's lifecycle;
    verify() also works without start() (keys are then fetched on first use)."""

    def __init__(
        self,
        issuers: list[IssuerConfig],
        *,
        clock: Callable[[], float] = time.monotonic,
        verified_cache_size: int = 10_000,
        revocations: Callable[[], RevocationIndex | None] | None = None,
        tenants: Callable[[], Container[str] | None] | None = None,
        tenants_miss: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        check_issuers(issuers)
        # The live token revocations (storage's SnapshotCache.revocations), read on every request;
        # None (no storage) or returning None: nothing is revoked.
        self.revocations = revocations
        # The stored tenants by id (storage's Snapshot.tenants), read on every request; None (no
        # storage, or not loaded yet): tenants are not checked. `tenants_miss` re-reads them once
        # (rate-limited) before an unknown tenant is refused; True if it did.
        self.tenants = tenants
        self.tenants_miss = tenants_miss
        # Clients reuse one token for its whole life: a token verified once is answered from here
        # until its exp (+ leeway) or until its issuer's key set changes. Bounded; oldest out first.
        # Value: (principal, exp + leeway, key cache, its generation, iss, jti, iat).
        self._verified: dict[str, tuple[Principal, float, JwksCache, int, str, str | None, float | None]] = {}
        self._verified_max = verified_cache_size
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._by_iss = {cfg.issuer: _Issuer(cfg, JwksCache(cfg, self._get_session, clock=clock)) for cfg in issuers}
        self._jwt = jwt.PyJWT()
        self._loop_task: asyncio.Task | None = None

    @property
    def caches(self) -> dict[str, JwksCache]:
        """Each issuer's key cache by issuer name (fetch counts, last error: for metrics and tests)."""
        return {i.cfg.name: i.keys for i in self._by_iss.values()}

    async def start(self) -> None:
        """Fetch every issuer's keys (a provider that is down is logged, not fatal) and keep them fresh."""
        if not self._by_iss:
            return
        await asyncio.gather(*(i.keys.refresh() for i in self._by_iss.values()))
        self._loop_task = asyncio.create_task(self._refresh_loop(), name="oidc-jwks-refresh")

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
            self._loop_task = None
        for issuer in self._by_iss.values():
            await issuer.keys.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def verify(self, token: str | bytes) -> Principal:
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise _malformed() from None
        hit = self._verified.get(token)
        if hit is not None:
            principal, expires_at, keys, generation, iss, jti, iat = hit
            if time.time() < expires_at and keys.generation == generation:
                if self._clock() >= keys.next_refresh:
                    keys.refresh_in_background()
                if self.revocations is not None:
                    self._check_revoked(principal, iss, jti, iat)
                if self.tenants is not None and not self._tenant_known(principal):
                    await self._recheck_tenant(principal)
                return principal
            self._verified.pop(token, None)
        if len(token) > MAX_TOKEN_BYTES:
            raise _too_large()
        try:
            unverified = self._jwt.decode_complete(token, options={"verify_signature": False})
        except (jwt_errors.PyJWTError, ValueError, TypeError):
            raise _malformed() from None
        header, claims = unverified["header"], unverified["payload"]
        if not _dates_ok(claims):
            raise _bad_dates()
        iss = claims.get("iss")
        issuer = self._by_iss.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise _unknown_issuer()
        cfg = issuer.cfg
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in cfg.algorithms:
            raise _unauthorized(
                f"The token's signing algorithm is not allowed for issuer '{cfg.name}' "
                f"(allowed: {', '.join(cfg.algorithms)}).",
                "algorithm_not_allowed",
            )
        key = await issuer.keys.key(header.get("kid"), alg)
        try:
            payload = self._jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=issuer.audiences,
                issuer=cfg.issuer,
                leeway=cfg.leeway_s,
                options=issuer.options,
            )
        except jwt_errors.PyJWTError as exc:
            raise _explain(exc, cfg) from None
        principal = principal_from_claims(cfg, payload)
        jti, iat = _jti_of(payload), _iat_of(payload)
        if self._verified_max > 0:
            if len(self._verified) >= self._verified_max:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = (
                principal,
                int(payload["exp"]) + cfg.leeway_s,
                issuer.keys,
                issuer.keys.generation,
                cfg.issuer,
                jti,
                iat,
            )
        if self.revocations is not None:
            self._check_revoked(principal, cfg.issuer, jti, iat)
        if self.tenants is not None and not self._tenant_known(principal):
            await self._recheck_tenant(principal)
        return principal

    def facts(self, token: str | bytes) -> dict[str, Any] | None:
        """What a revocation matches of a token `verify` accepted for this request (its issuer, jti and iat),
        kept with work queued by it and run later (identity/stored_caller.py): no secret, and not the token."""
        if isinstance(token, bytes):
            token = token.decode("ascii", "replace")
        hit = self._verified.get(token)
        if hit is not None:
            return {"iss": hit[4], "jti": hit[5], "iat": hit[6]}
        try:  # verified already (verify() raised for anything else); the cache may be off or full
            payload = self._jwt.decode_complete(token, options={"verify_signature": False})["payload"]
        except (jwt_errors.PyJWTError, ValueError, TypeError):
            return None
        issuer = self._by_iss.get(payload.get("iss")) if isinstance(payload.get("iss"), str) else None
        if issuer is None:
            return None
        return {"iss": issuer.cfg.issuer, "jti": _jti_of(payload), "iat": _iat_of(payload)}

    def check_stored(self, principal: Principal, facts: Mapping[str, Any]) -> None:
        """Raise 401 token_revoked if a live revocation covers the token `facts` describe (queued work's), and
        401 unknown_issuer if its issuer is trusted no more (taken out of identity.oidc since: a compromised
        identity provider's queued work must stop with its tokens)."""
        iss, jti, iat = facts.get("iss"), facts.get("jti"), facts.get("iat")
        if not isinstance(iss, str) or iss not in self._by_iss:
            raise untrusted_issuer()
        if self.revocations is not None:
            self._check_revoked(
                principal, iss, jti if isinstance(jti, str) else None, iat if isinstance(iat, (int, float)) else None
            )

    def _tenant_known(self, principal: Principal) -> bool:
        """Is the principal's tenant stored (memory only: one dictionary lookup)?"""
        known = self.tenants()  # type: ignore[misc]
        return known is None or principal.tenant in known

    async def _recheck_tenant(self, principal: Principal) -> None:
        """After a miss: re-read the stored tenants once (rate-limited), then raise 403 unknown_tenant."""
        if self.tenants_miss is not None and await self.tenants_miss() and self._tenant_known(principal):
            return  # created moments ago on another replica
        raise _unknown_tenant()

    def _check_revoked(self, principal: Principal, iss: str, jti: str | None, iat: float | None) -> None:
        """Raise 401 token_revoked if a live revocation covers this token (memory only, O(1))."""
        index = self.revocations()  # type: ignore[misc]
        if index:  # None, or empty: nothing revoked
            found = index.match(iss, jti, principal.subject, iat, principal.tenant, roles=principal.roles)
            if found is not None:
                raise _revoked(found.id)

    # -- internals -----------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16, ttl_dns_cache=300),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"accept": "application/json", "user-agent": "multihome-oidc"},
            )
        return self._session

    async def _refresh_loop(self) -> None:
        caches = [i.keys for i in self._by_iss.values()]
        while True:
            due = min(c.next_refresh for c in caches) - self._clock()
            await asyncio.sleep(min(max(due, 1.0), 60.0))
            for cache in caches:
                if self._clock() >= cache.next_refresh:
                    cache.refresh_in_background()


def _explain(exc: jwt_errors.PyJWTError, cfg: IssuerConfig) -> ApiError:
    """A PyJWT failure as a client-facing error. Messages are ours: PyJWT's may quote the token."""
    if isinstance(exc, jwt_errors.ExpiredSignatureError):
        return _unauthorized("The token has expired; get a new one from your identity provider.", "token_expired")
    if isinstance(exc, jwt_errors.ImmatureSignatureError):
        return _unauthorized(
            f"The token is not valid yet (its nbf or iat is more than {cfg.leeway_s:g} s in the future); "
            "check the clocks of the client and the identity provider.",
            "token_not_yet_valid",
        )
    if isinstance(exc, jwt_errors.InvalidAudienceError):
        return _unauthorized(
            f"The token's audience (aud) is not this gateway (expected one of: {', '.join(cfg.audiences)}).",
            "invalid_audience",
        )
    if isinstance(exc, jwt_errors.InvalidIssuerError):
        return _unauthorized(f"The token's issuer (iss) does not match issuer '{cfg.name}'.", "invalid_issuer")
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return _unauthorized(f"The token lacks the required '{exc.claim}' claim.", "missing_claim")
    if isinstance(exc, jwt_errors.InvalidSignatureError):
        return _unauthorized(
            f"The token's signature does not verify with the keys of issuer '{cfg.name}'.", "invalid_signature"
        )
    if isinstance(exc, jwt_errors.InvalidAlgorithmError):
        return _unauthorized(
            f"The token's signing algorithm is not allowed for issuer '{cfg.name}' (allowed: {', '.join(cfg.algorithms)}).",
            "algorithm_not_allowed",
        )
    if isinstance(exc, jwt_errors.InvalidKeyError):
        return _unauthorized(
            f"The key issuer '{cfg.name}' signed this token with is too weak to be trusted.", "invalid_signature"
        )
    if isinstance(exc, jwt_errors.InvalidIssuedAtError):
        return _unauthorized("The token's iat claim is not a number.", "malformed_token")
    if isinstance(exc, jwt_errors.InvalidSubjectError):  # PyJWT checks `sub` whichever claim names the subject
        return forbidden("The token's 'sub' claim is not a string.", "invalid_claim")
    if isinstance(exc, jwt_errors.InvalidJTIError):
        return _unauthorized("The token's jti claim is not a string.", "malformed_token")
    if isinstance(exc, jwt_errors.DecodeError):
        return _bad_dates()
    return _unauthorized("The token is not valid.", "invalid_token")
