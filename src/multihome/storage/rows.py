"""The snapshot's rows, read one at a time: a row the gateway cannot read is left out and reported.

Such a row (a hand edit, a row another version wrote, a bug) must not make `Store.snapshot()` raise:
every reload would fail and the previous snapshot would stay, a key or grant revoked in the same
change still honoured. The row is reported (`Unreadable`) and the snapshot decides, per table and
fail closed, what leaving it out means (`refusals`): an API key left out is unknown (401); any other
row refuses its tenant's calls, as the tenant's data may hold a restriction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa

from .base import as_utc
from .records import Budget, Entitlement, KeyRecord, Team, Tenant, TokenRevocation

T = TypeVar("T")
Fields = tuple[str, ...]  # a table's column names, in its rows' order
# The snapshot tables' timestamp columns (SQLite hands them back naive).
_STAMPS = ("created_at", "updated_at", "expires_at", "revoked_at", "not_before")

# What a driver's decoding of one stored value raises (SQLite keeps any type in any column: a date
# column holding "soon", a JSON column holding text that is not JSON).
_DECODE_ERRORS = (ValueError, TypeError, OverflowError, KeyError, AttributeError, IndexError)
DECODE_ERRORS = _DECODE_ERRORS  # for reads that cannot go row by row (state/memory/store.py's index loads)
API_KEYS = "api_keys"
TENANTS = "tenants"
ENTITLEMENTS = "entitlements"
TOKEN_REVOCATIONS = "token_revocations"
ALL_TOKENS = None  # the refusal key of an org-wide (tenant_id null) revocation: every OIDC token


class RowProblem(ValueError):
    """A stored row that decodes but makes no sense; its message names fields, never values."""


class Unreadable(msgspec.Struct, frozen=True):
    table: str
    id: str
    tenant_id: str | None  # None: an org-wide row, or a tenant id that could not be read
    problem: str  # names the field and what is wrong, never a stored value (a key hash, a secret)
    # Entitlements: the group pattern the grant may hold exclusively ("*": its group cannot be read); None:
    # surely not exclusive. Left out, an exclusive grant would open its group to every other tenant.
    exclusive_group: str | None = None

    def describe(self) -> str:
        return f"{self.table} {self.id}: {self.problem}"


def problem(exc: BaseException) -> str:
    """What was wrong, without quoting the stored value: msgspec's and our messages name fields only."""
    if isinstance(exc, msgspec.ValidationError | RowProblem):
        return " ".join(str(exc).split())[:200]
    return f"a stored value cannot be decoded ({type(exc).__name__})"


def _ident(value: Any) -> str | None:
    return None if value is None else str(value)[:80]


def _exclusive_group(group: Any, flag: Any) -> str | None:
    """The group an unreadable grant may hold exclusively: None if its flag is surely false, "*" if its
    group cannot be read either."""
    if flag is False or (type(flag) is int and flag == 0):
        return None
    return group if isinstance(group, str) and group else "*"


async def fetch(conn: Any, query: sa.Select, table: sa.Table) -> tuple[list[Any], list[Unreadable]]:
    """The rows of `query`; a row the driver cannot decode is reported instead (read row by row then)."""
    try:
        return list((await conn.execute(query)).all()), []
    except _DECODE_ERRORS:
        pass  # some row: find it; the others are still served
    tenant_col = table.c.id if table.name == TENANTS else table.c.tenant_id
    # Read as stored, with no driver decoding: the id, the tenant, and a grant's group and exclusive flag.
    grant = table.name == ENTITLEMENTS
    group_col = table.c.model_group if grant else sa.null()
    flag_col = sa.type_coerce(table.c.exclusive, sa.Integer) if grant else sa.null()
    ids = (await conn.execute(query.with_only_columns(table.c.id, tenant_col, group_col, flag_col))).all()
    rows: list[Any] = []
    bad: list[Unreadable] = []
    for row_id, tenant_id, group, flag in ids:
        try:
            row = (await conn.execute(query.where(table.c.id == row_id))).first()
        except _DECODE_ERRORS as exc:
            excl = _exclusive_group(group, flag) if grant else None
            name = str(table.name)  # not SQLAlchemy's quoted_name: the admin API encodes it
            bad.append(Unreadable(name, str(row_id), _ident(tenant_id), problem(exc), excl))
            continue
        if row is not None:  # gone since: cannot happen inside one transaction, harmless if it did
            rows.append(row)
    return rows, bad


def convert(table: str, rows: Sequence[Any], build: Callable[[Any, Fields], T], bad: list[Unreadable]) -> list[T]:
    """`build(row, column names)` of each row; one that raises is reported in `bad` (whatever it raised:
    fail closed). The names are read once per table: a row's `_fields` costs ~230 opcodes."""
    out: list[T] = []
    fields: Fields = tuple(map(str, rows[0]._fields)) if rows else ()  # str: not SQLAlchemy's quoted_name
    for r in rows:
        try:
            out.append(build(r, fields))
        except Exception as exc:
            tenant = getattr(r, "id", None) if table == TENANTS else getattr(r, "tenant_id", None)
            excl = _exclusive_group(getattr(r, "model_group", None), getattr(r, "exclusive", True))
            bad.append(
                Unreadable(
                    table,
                    str(getattr(r, "id", "?")),
                    _ident(tenant),
                    problem(exc),
                    excl if table == ENTITLEMENTS else None,
                )
            )
    return out


def stamp(value: Any) -> Any:
    """A timestamp selected as stored text (`sa.type_coerce(column, sa.Text)`, so the driver decodes nothing
    and one bad row cannot fail a read of them all): SQLite's text parsed here, raising ValueError if it is
    not a time; PostgreSQL's drivers hand back a datetime whatever the coercion. As UTC; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise RowProblem("a timestamp is not a time")
    return as_utc(value)


def lenient(from_row: Callable[[Any], T]) -> Callable[[Any, Fields], T]:
    """A table's own `*_from_row` (policies, pins: api/policy_gate.py checks what they hold)."""
    return lambda r, fields: from_row(r)


def _strict(cls: type[T], r: Any, fields: Fields) -> T:
    """The row as `cls`, every field type-checked (no coercion: tuple() of a string made a list of
    letters, dict() of null raised); timestamps read as UTC."""
    values = dict(zip(fields, r, strict=True))
    for name in _STAMPS:
        stamp = values.get(name)
        if stamp is not None and stamp.tzinfo is not UTC:
            values[name] = as_utc(stamp)
    return msgspec.convert(values, cls)


def tenant(r: Any, fields: Fields) -> Tenant:
    return _strict(Tenant, r, fields)


def team(r: Any, fields: Fields) -> Team:
    return _strict(Team, r, fields)


def key(r: Any, fields: Fields) -> KeyRecord:
    return _strict(KeyRecord, r, fields)


def entitlement(r: Any, fields: Fields) -> Entitlement:
    return _strict(Entitlement, r, fields)


def budget(r: Any, fields: Fields) -> Budget:
    b = _strict(Budget, r, fields)
    try:
        amount = Decimal(b.amount)
    except InvalidOperation:
        raise RowProblem("amount is not a decimal number") from None
    if not (amount.is_finite() and amount > 0):
        raise RowProblem("amount is not a positive finite number")
    if not b.currency:
        raise RowProblem("currency is empty")
    return b


def revocation(r: Any, fields: Fields) -> TokenRevocation:
    rev = _strict(TokenRevocation, r, fields)
    # What RevocationIndex would skip (no revocation at all); the database's check constraint forbids it.
    if rev.kind == "jti" and rev.jti is None:
        raise RowProblem("a jti revocation without a jti")
    if rev.kind == "subject" and (rev.subject is None or rev.not_before is None):
        raise RowProblem("a subject revocation without a subject or not_before")
    return rev


def refusals(bad: Iterable[Unreadable]) -> dict[str | None, str]:
    """Tenant id -> why its calls are refused (ALL_TOKENS: every OIDC token), for the unreadable rows.

    An API key left out is refused as unknown already (401), and it restricts nothing else. Any other
    row may be a restriction (a revocation, a budget, a tenant's own row, a policy), so its tenant is
    refused until the row is fixed; an org-wide token revocation refuses every OIDC token."""
    out: dict[str | None, str] = {}
    for u in bad:
        if u.table != API_KEYS:
            out.setdefault(u.tenant_id, u.describe())
    return out


def token_refusals(bad: Iterable[Unreadable]) -> frozenset[str | None]:
    """The tenants (ALL_TOKENS: every tenant) whose OIDC tokens an unreadable token revocation may revoke:
    unlike the tenant's other refused callers, those tokens stay refused in the admin API too."""
    return frozenset(u.tenant_id for u in bad if u.table == TOKEN_REVOCATIONS)
