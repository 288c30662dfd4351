"""Config for trusted OIDC/JWT issuers: `identity.oidc` is a list of `IssuerConfig`.

Validated while the YAML is converted (msgspec turns the ValueErrors below into errors that name
the key path). Only asymmetric algorithms are accepted: keys come from a public JWKS, so `none`
and the HMAC family (HS256...) could only ever be an attack.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ..schema.principal import ALL_TENANTS, ROLES
from .struct import Strict

# Algorithms a token may be signed with, by the key type (and curve) that verifies them.
ASYMMETRIC_ALGORITHMS = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}


class ClaimsMap(Strict):
    """Which claims of a verified token become the Principal. Claim names may be dotted paths
    into nested objects ("realm_access.roles"); a top-level claim with that exact name wins."""

    subject: str = "sub"
    tenant: str | None = None  # claim holding the tenant id (e.g. Entra "tid", a custom "tenant")...
    tenant_value: str | None = None  # ...or every token of this issuer belongs to this one tenant
    # Optional translation of the claim's value (e.g. an Entra directory GUID) to a Multihome
    # tenant id; when set, a value not listed here is refused.
    tenant_map: dict[str, str] = msgspec.field(default_factory=dict)
    team: str | None = None  # claim holding the team (a string, or a list of exactly one)
    # Claim(s) holding the caller's external roles/groups: a list, or a space-separated string.
    roles: str | list[str] | None = None
    role_map: dict[str, str] = msgspec.field(default_factory=dict)  # external role -> Multihome role
    default_roles: list[str] = msgspec.field(default_factory=lambda: ["member"])  # always granted

    def __post_init__(self) -> None:
        if (self.tenant is None) == (self.tenant_value is None):
            raise ValueError("claims: set exactly one of `tenant` (a claim name) or `tenant_value` (a fixed tenant)")
        if self.tenant_map and self.tenant is None:
            raise ValueError("claims.tenant_map: only with `tenant` (a claim name)")
        if self.tenant_value == ALL_TENANTS or ALL_TENANTS in self.tenant_map.values():
            raise ValueError(f"claims: '{ALL_TENANTS}' is not a tenant (it stands for every tenant); name a tenant id")
        for external, role in self.role_map.items():
            if role not in ROLES:
                raise ValueError(f"claims.role_map.{external}: '{role}' is not a role (one of {', '.join(ROLES)})")
        for role in self.default_roles:
            if role not in ROLES:
                raise ValueError(f"claims.default_roles: '{role}' is not a role (one of {', '.join(ROLES)})")
        if isinstance(self.roles, str):
            self.roles = [self.roles]
        if self.role_map and not self.roles:
            raise ValueError("claims.role_map: also set `roles`, the claim the external roles are read from")


class IssuerConfig(Strict):
    name: str  # short name, shown as the principal's source "oidc:<name>"
    issuer: str  # the exact `iss` value tokens carry
    audiences: list[str]  # a token's `aud` must contain one of these
    # Where the signing keys are; unset = discovered from {issuer}/.well-known/openid-configuration.
    jwks_uri: str | None = None
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256"])
    leeway_s: float = 30.0  # clock skew tolerated on exp / nbf / iat
    claims: ClaimsMap = msgspec.field(default_factory=lambda: ClaimsMap(tenant="tenant"))
    # Claims a token must carry with these values (a list claim must contain the value; a list
    # value means all of them). E.g. {"tid": "<directory id>"}, {"groups": "ai-users"}.
    required_claims: dict[str, Any] = msgspec.field(default_factory=dict)
    refresh_s: float = 600.0  # JWKS refresh period when the response has no Cache-Control max-age
    min_refresh_interval_s: float = 30.0  # at most one fetch per interval, whatever tokens arrive
    fetch_timeout_s: float = 5.0
    # The longest lifetime (exp - iat) this issuer gives tokens. A revocation of one token (by jti)
    # whose exp is not given is kept this long (docs/oidc.md "Revocation").
    max_token_lifetime_s: float = 86400.0

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError("name: use letters, digits, '-' or '_'")
        check_url(self.issuer, "issuer")
        if self.jwks_uri is not None:
            check_url(self.jwks_uri, "jwks_uri")
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ValueError("audiences: list at least one audience (the value your IdP puts in `aud`)")
        if not self.algorithms:
            raise ValueError("algorithms: list at least one algorithm, e.g. [RS256]")
        for alg in self.algorithms:
            if alg.lower() == "none":
                raise ValueError("algorithms: 'none' (unsigned tokens) is never allowed")
            if alg.upper().startswith("HS"):
                raise ValueError(
                    f"algorithms: '{alg}' is a shared-secret algorithm; keys from a JWKS are public, so only "
                    f"asymmetric algorithms are allowed ({', '.join(ASYMMETRIC_ALGORITHMS)})"
                )
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(f"algorithms: unknown algorithm '{alg}' (one of {', '.join(ASYMMETRIC_ALGORITHMS)})")
        if self.leeway_s < 0 or self.leeway_s > 300:
            raise ValueError("leeway_s: between 0 and 300 seconds")
        if self.min_refresh_interval_s < 0 or self.refresh_s < max(self.min_refresh_interval_s, 1):
            raise ValueError("refresh_s: must be at least min_refresh_interval_s (and 1 s)")
        if self.fetch_timeout_s <= 0:
            raise ValueError("fetch_timeout_s: must be positive")
        if not 60 <= self.max_token_lifetime_s <= 366 * 86400:
            raise ValueError("max_token_lifetime_s: between 60 seconds and 366 days")


def check_issuers(issuers: list[IssuerConfig]) -> None:
    """Cross-entry rules for `identity.oidc`; raises ValueError naming the entry."""
    names: set[str] = set()
    seen: set[str] = set()
    for i, cfg in enumerate(issuers):
        if cfg.name in names:
            raise ValueError(f"identity.oidc[{i}].name: '{cfg.name}' is used by another issuer")
        if cfg.issuer in seen:
            raise ValueError(f"identity.oidc[{i}].issuer: another entry trusts the same issuer")
        names.add(cfg.name)
        seen.add(cfg.issuer)


def check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return  # local development and tests
    raise ValueError(f"{what}: must be an https:// URL (http:// only for loopback hosts)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
