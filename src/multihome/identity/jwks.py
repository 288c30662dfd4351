"""One issuer's signing keys (JWKS), served from memory and fetched off the request path.

- Keys are parsed once per fetch into PyJWT `PyJWK` objects, indexed by (kid, algorithm), so a
  verification does a dict lookup and no parsing.
- Refreshed on a schedule: Cache-Control max-age when the IdP sends one, else `refresh_s`.
  A request that finds the keys stale is answered with the keys in hand while the refresh runs.
- A token naming an unknown `kid` (the IdP rotated keys) forces a refresh, at most once per
  `min_refresh_interval_s`: a flood of tokens with made-up kids costs the IdP one fetch.
- Fetches are single-flight: concurrent callers await the same fetch; callers of other issuers,
  and callers whose key is known, never wait for it.
- A failed fetch keeps the previous keys.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from ..config.oidc import ASYMMETRIC_ALGORITHMS, IssuerConfig, check_url
from ..schema.errors import ApiError
from .provider_http import FetchError, fetch_json

log = logging.getLogger("multihome.identity.jwks")

MAX_KEYS = 100
MAX_AGE_CAP_S = 24 * 3600
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(no-cache|no-store)(?:$|[,\s])", re.IGNORECASE)
_UNAUTHORIZED = {"www-authenticate": 'Bearer error="invalid_token"'}


class JwksCache:
    def __init__(
        self,
        cfg: IssuerConfig,
        session: Callable[[], aiohttp.ClientSession],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = cfg
        self._session = session
        self._clock = clock
        self._jwks_uri = cfg.jwks_uri
        self._keys: dict[tuple[str, str], PyJWK] = {}
        self._kids: frozenset[str] = frozenset()
        self._by_alg: dict[str, list[PyJWK]] = {}  # for tokens that name no kid
        self.loaded = False
        self.generation = 0  # bumped whenever the published key set changes
        self._fingerprint = b""
        self.fetches = 0  # JWKS fetch attempts (discovery not counted)
        self.last_error: str | None = None
        self._last_attempt = -math.inf
        self._next_refresh = -math.inf
        self._inflight: asyncio.Future[bool] | None = None

    # -- the request path --------------------------------------------------------------------

    async def key(self, kid: str | None, alg: str) -> PyJWK:
        """The key that must verify a token with this header, fetching keys only when needed."""
        found = self.lookup(kid, alg)
        if found is not None:
            if self._clock() >= self._next_refresh:
                self.refresh_in_background()
            return found
        if self._clock() - self._last_attempt >= self._cfg.min_refresh_interval_s or (
            self._inflight is not None and not self._inflight.done()
        ):
            await self.refresh()
            found = self.lookup(kid, alg)
            if found is not None:
                return found
        if not self.loaded:
            raise ApiError(
                503,
                f"The signing keys of identity provider '{self._cfg.name}' could not be fetched; try again shortly.",
                type="server_error",
                code="jwks_unavailable",
                headers={"retry-after": str(max(1, int(self._cfg.min_refresh_interval_s)))},
            )
        if kid is None:
            raise ApiError(
                401,
                f"The token names no key id (kid) and issuer '{self._cfg.name}' publishes no key for its algorithm.",
                code="unknown_key",
                headers=_UNAUTHORIZED,
            )
        raise ApiError(
            401,
            f"The token was signed with a key issuer '{self._cfg.name}' does not publish (unknown kid). "
            "If the provider just rotated its keys, retry in a minute.",
            code="unknown_key",
            headers=_UNAUTHORIZED,
        )

    def lookup(self, kid: str | None, alg: str) -> PyJWK | None:
        """From memory only: the key, None when unknown, or an error when the header cannot match."""
        if kid is None:
            candidates = self._by_alg.get(alg)
            if not candidates:
                return None
            if len(candidates) > 1:
                raise ApiError(
                    401,
                    f"The token names no key id (kid) and issuer '{self._cfg.name}' publishes several keys; "
                    "tokens must carry a kid.",
                    code="missing_kid",
                    headers=_UNAUTHORIZED,
                )
            return candidates[0]
        found = self._keys.get((kid, alg))
        if found is None and kid in self._kids:
            raise ApiError(
                401,
                f"The token's algorithm does not match the type of the key it names (issuer '{self._cfg.name}').",
                code="algorithm_not_allowed",
                headers=_UNAUTHORIZED,
            )
        return found

    # -- refreshing ----------------------------------------------------------------------------

    def refresh_in_background(self) -> None:
        if self._inflight is None or self._inflight.done():
            self._start_fetch()

    async def refresh(self) -> bool:
        """Join the fetch in flight or start one; True when keys were (re)loaded."""
        fut = self._inflight if self._inflight is not None and not self._inflight.done() else self._start_fetch()
        # A caller that gives up (client gone) must not cancel the fetch others are waiting on.
        return await asyncio.shield(fut)

    @property
    def next_refresh(self) -> float:
        return self._next_refresh

    async def close(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
            try:
                await self._inflight
            except BaseException:
                pass

    def _start_fetch(self) -> asyncio.Future[bool]:
        self._last_attempt = self._clock()
        self._inflight = asyncio.ensure_future(self._fetch())
        return self._inflight

    async def _fetch(self) -> bool:
        cfg = self._cfg
        discovered = False
        try:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover()
                discovered = True
            self.fetches += 1
            doc, max_age = await self._get_json(self._jwks_uri, "JWKS")
            keys, by_alg = parse_jwks(doc, cfg.algorithms)
            fingerprint = msgspec.json.encode(doc.get("keys"), order="sorted")
        except Exception as exc:
            self.last_error = str(exc) if isinstance(exc, FetchError) else f"unexpected {type(exc).__name__}"
            if not isinstance(exc, FetchError):
                log.exception("identity provider %s: unexpected error refreshing keys", cfg.name)
            if cfg.jwks_uri is None and not discovered:
                self._jwks_uri = None  # discover again next time: the IdP may have moved its keys
            # Keep the keys in hand; try again after the minimum interval.
            self._next_refresh = self._clock() + max(cfg.min_refresh_interval_s, 1.0)
            log.warning("identity provider %s: %s; keeping %d known keys", cfg.name, self.last_error, len(self._keys))
            return False
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self.generation += 1
        self._keys = keys
        self._kids = frozenset(kid for kid, _ in keys)
        self._by_alg = by_alg
        self.loaded = True
        self.last_error = None
        if max_age is None:
            interval = cfg.refresh_s
        else:
            interval = min(max(max_age, cfg.min_refresh_interval_s, 1.0), MAX_AGE_CAP_S)
        self._next_refresh = self._clock() + interval
        return True

    async def _discover(self) -> str:
        url = self._cfg.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc, _ = await self._get_json(url, "discovery document")
        if doc.get("issuer") != self._cfg.issuer:
            raise FetchError("the discovery document names a different issuer than the one configured")
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str):
            raise FetchError("the discovery document has no jwks_uri")
        try:
            check_url(uri, "jwks_uri")
        except ValueError as exc:
            raise FetchError(f"discovered {exc}") from None
        return uri

    async def _get_json(self, url: str, what: str) -> tuple[dict[str, Any], float | None]:
        doc, cache_control = await fetch_json(self._session(), url, what, timeout_s=self._cfg.fetch_timeout_s)
        return doc, _max_age(cache_control)


def parse_jwks(
    doc: dict[str, Any], algorithms: list[str]
) -> tuple[dict[tuple[str, str], PyJWK], dict[str, list[PyJWK]]]:
    """Signature keys usable with the allowed algorithms, as PyJWKs by (kid, alg) and by alg.

    Skipped: symmetric (`oct`) keys, encryption keys, keys whose declared `alg` or type/curve does
    not fit an allowed algorithm, keys PyJWT cannot load. No usable key at all is an error.
    """
    raw = doc.get("keys")
    if not isinstance(raw, list):
        raise FetchError("JWKS has no 'keys' list")
    keys: dict[tuple[str, str], PyJWK] = {}
    by_alg: dict[str, list[PyJWK]] = {}
    for jwk in raw[:MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kty, kid = jwk.get("kty"), jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        for alg in algorithms:
            want_kty, want_crv = ASYMMETRIC_ALGORITHMS[alg]
            if kty != want_kty or (want_crv is not None and jwk.get("crv") != want_crv):
                continue
            if jwk.get("alg", alg) != alg:
                continue
            try:
                key = PyJWK(jwk, algorithm=alg)
            except PyJWTError:
                continue
            if kid is not None:
                keys[(kid, alg)] = key
            by_alg.setdefault(alg, []).append(key)
    if not by_alg:
        raise FetchError(f"JWKS has no usable signing key for {', '.join(algorithms)}")
    return keys, by_alg


def _max_age(cache_control: str) -> float | None:
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None
