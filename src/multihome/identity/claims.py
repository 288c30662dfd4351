"""Verified token claims -> Principal, by an issuer's claims mapping. Pure functions, no I/O.

Refusals here are 403: the token is genuine, it just does not entitle its bearer to anything
(no tenant, a required claim missing, no role). Messages name claims, never their values.
"""

from __future__ import annotations

from typing import Any

from ..config.oidc import IssuerConfig
from ..schema.admin_fields import text
from ..schema.errors import ApiError
from ..schema.principal import ALL_TENANTS, Principal

_MISSING = object()
# A subject, tenant or team taken from a token goes into usage rows, audit events, logs and headers: held
# to what the admin API holds names to (one line, no control characters), longer for a subject (an email,
# a URL-shaped id), and to text PostgreSQL can store (no lone surrogate: a batch with one never commits).
_CLAIM_MAX = 512
# Claims defined as space-delimited lists (RFC 8693 `scope`, Entra ID `scp`).
_SPACE_DELIMITED = frozenset({"scope", "scp"})


def claim(payload: dict[str, Any], name: str) -> Any:
    """A claim by exact name, else by dotted path into nested objects; `_MISSING` when absent."""
    value = payload.get(name, _MISSING)
    if value is not _MISSING or "." not in name:
        return value
    node: Any = payload
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def forbidden(message: str, code: str) -> ApiError:
    return ApiError(403, message, type="permission_error", code=code)


def principal_from_claims(cfg: IssuerConfig, payload: dict[str, Any]) -> Principal:
    m = cfg.claims
    _check_required(cfg, payload)

    subject = claim(payload, m.subject)
    if subject is not _MISSING and subject is not None and not isinstance(subject, str):
        raise forbidden(f"The token's '{m.subject}' claim is not a string.", "invalid_claim")
    if not isinstance(subject, str) or not subject:  # absent, null or ""
        raise ApiError(
            401,
            f"The token has no '{m.subject}' claim naming its subject.",
            code="missing_claim",
            headers={"www-authenticate": 'Bearer error="invalid_token"'},
        )
    _usable(subject, m.subject)

    if m.tenant_value is not None:
        tenant = m.tenant_value
    else:
        assert m.tenant is not None  # ClaimsMap holds exactly one of tenant and tenant_value
        raw = claim(payload, m.tenant)
        if raw is _MISSING or raw is None or raw == "":
            raise forbidden(
                f"The token carries no tenant: its '{m.tenant}' claim is missing. Ask your identity provider "
                f"admin to add it (issuer '{cfg.name}').",
                "no_tenant",
            )
        if not isinstance(raw, str):
            raise forbidden(f"The token's '{m.tenant}' claim must be a single string naming the tenant.", "no_tenant")
        if m.tenant_map:
            mapped = m.tenant_map.get(raw)
            if mapped is None:
                raise forbidden(
                    f"The token's tenant (claim '{m.tenant}') is not mapped to a tenant of this gateway "
                    f"(identity.oidc '{cfg.name}' claims.tenant_map).",
                    "unknown_tenant",
                )
            tenant = mapped
        else:
            tenant = raw
    _usable(tenant, m.tenant or "tenant")
    if tenant == ALL_TENANTS:
        # "*" means every tenant, for the bootstrap org-admin key only; a token never acts for all.
        raise forbidden(
            f"The token's tenant (claim '{m.tenant}') is not a tenant of this gateway: it is unknown or has been "
            "offboarded. Ask your administrator.",
            "unknown_tenant",
        )

    team = None
    if m.team is not None:
        raw = claim(payload, m.team)
        if isinstance(raw, list) and len(raw) == 1:
            raw = raw[0]
        if isinstance(raw, str) and raw:
            team = _usable(raw, m.team)
        elif raw is not _MISSING and raw is not None:
            raise forbidden(f"The token's '{m.team}' claim must be one string naming the team.", "invalid_team")

    roles = set(m.default_roles)
    for name in m.roles or ():
        for external in _as_list(claim(payload, name), space_delimited=True):
            role = m.role_map.get(external) if isinstance(external, str) else None
            if role is not None:
                roles.add(role)
    if not roles:
        raise forbidden(
            f"The token grants no role on this gateway: none of its roles is listed in identity.oidc "
            f"'{cfg.name}' claims.role_map.",
            "no_role",
        )
    return Principal(tenant=tenant, subject=subject, source=f"oidc:{cfg.name}", team=team, roles=frozenset(roles))


def _check_required(cfg: IssuerConfig, payload: dict[str, Any]) -> None:
    for name, expected in cfg.required_claims.items():
        value = claim(payload, name)
        if value is _MISSING:
            raise forbidden(f"The token lacks the '{name}' claim issuer '{cfg.name}' requires.", "claim_mismatch")
        present = _as_list(value, space_delimited=name in _SPACE_DELIMITED)
        wanted = expected if isinstance(expected, list) else [expected]
        if not (value == expected or all(w in present for w in wanted)):
            raise forbidden(
                f"The token's '{name}' claim does not have the value issuer '{cfg.name}' requires.", "claim_mismatch"
            )


def _as_list(value: Any, *, space_delimited: bool) -> list[Any]:
    if value is _MISSING or value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str) and space_delimited:
        return value.split()
    return [value]


def _usable(value: str, name: str) -> str:
    """`value` if it may name a subject, tenant or team; else a 403 naming the claim, never its value."""
    field = f"The token's '{name}' claim"
    problem = text(value, field, max_len=_CLAIM_MAX)
    message = problem.message if problem is not None else None
    if message is None and not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            message = f"{field} is not valid Unicode text (a lone surrogate)"
    if message is not None:
        raise forbidden(message + ".", "invalid_claim")
    return value
