"""The 400 for a name in an admin body that the gateway's config does not have (a provider, a model group):
a row naming one would silently match no call, so it is refused where it is written, never where it is read
(a stored row naming a group a later config dropped still loads)."""

from __future__ import annotations

from ...schema.errors import ApiError, echo


def unknown_name(noun: str, field: str, name: str, what: str, known: frozenset[str], why: str) -> ApiError:
    """ "Invalid <noun>: <field> '<name>' is no <what> of the gateway's config, <why> (known: …)."."""
    return ApiError(
        400,
        f"Invalid {noun}: {field} '{echo(name)}' is no {what} of the gateway's config, {why} (known: {listed(known)}).",
        param=field,
        code="invalid_value",
    )


def listed(names: frozenset[str], most: int = 20) -> str:
    shown = sorted(names)
    return (", ".join(shown[:most]) + (", …" if len(shown) > most else "")) or "none"
