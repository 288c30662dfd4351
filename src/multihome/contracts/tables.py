"""The contract tables, on the storage package's shared metadata (so `compare_metadata` sees them).

Amounts are exact decimal text, not SQL NUMERIC: SQLite has no exact decimal type (it would store
a REAL), and the ledger promises exactness. Sums are done in Python with `money.CTX`; the running
total per contract lives in `ledger_totals`, updated in the same transaction as the accruals.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..storage.tables import metadata  # the submodule, not the package root (see __init__)

TS = sa.DateTime(timezone=True)
AMOUNT = sa.String(80)  # exact Decimal text, e.g. "0.001234567"

contract_agreements = sa.Table(
    "contract_agreements",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),  # the agreement as JSON (amounts as strings)
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.CheckConstraint("kind IN ('revenue_share', 'commitment')", name="kind"),
)

# Append-only: one row per (contract, request). The primary key is the idempotency key, so a
# replayed or retried call can never accrue twice, on any replica.
ledger_accruals = sa.Table(
    "ledger_accruals",
    metadata,
    sa.Column("contract_id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("at", TS, nullable=False),  # when the call finished (UTC)
    sa.Column("basis", AMOUNT, nullable=False),  # metered cost the accrual is computed from
    sa.Column("requested", AMOUNT, nullable=False),  # cost x rate, before the cap
    sa.Column("amount", AMOUNT, nullable=False),  # what accrued: requested, or less at the cap
    sa.Column("price_version", sa.String(64), nullable=False),
    sa.Column("recorded_at", TS, nullable=False),
    sa.Index("ix_ledger_accruals_contract_id_at", "contract_id", "at"),
)

ledger_totals = sa.Table(
    "ledger_totals",
    metadata,
    sa.Column("contract_id", sa.String(64), primary_key=True),
    sa.Column("accrued", AMOUNT, nullable=False),
    sa.Column("requested", AMOUNT, nullable=False),
    sa.Column("calls", sa.BigInteger, nullable=False),
    sa.Column("capped_at", TS, nullable=True),  # when the accrual that reached the cap happened
    sa.Column("updated_at", TS, nullable=False),
)

# Accruals of a contract whose ledger cannot be read (its totals row, and one of the accruals it would be
# rebuilt from): kept here, in the transaction that found the row unreadable, instead of in memory and in
# the usage spool (both would grow with every call until the row is mended). Moved to `ledger_accruals`
# (and deleted here) in the first transaction that can read the contract's ledger again. The same key as
# `ledger_accruals`: a replayed or retried accrual is held once, and its move skips what is on record.
ledger_held = sa.Table(
    "ledger_held",
    metadata,
    sa.Column("contract_id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("at", TS, nullable=False),
    sa.Column("basis", AMOUNT, nullable=False),
    sa.Column("requested", AMOUNT, nullable=False),
    sa.Column("cap", AMOUNT, nullable=True),  # the agreement's cap when the call accrued (None: uncapped)
    sa.Column("price_version", sa.String(64), nullable=False),
    sa.Column("held_at", TS, nullable=False),
)
