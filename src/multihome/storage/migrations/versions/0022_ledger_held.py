"""held accruals: a contract's accruals kept in the database while its ledger rows cannot be read

Revision ID: 0022
Revises: 0021 (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-06

Defined in multihome/contracts/tables.py; written and emptied by multihome/contracts/ledger.py
(docs/storage.md "Beyond the snapshot's tables", `ledger_accruals`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import multihome.contracts.tables  # noqa: F401  (registers ledger_held on storage.tables.metadata)

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_held",
        sa.Column("contract_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("basis", sa.String(length=80), nullable=False),
        sa.Column("requested", sa.String(length=80), nullable=False),
        sa.Column("cap", sa.String(length=80), nullable=True),
        sa.Column("price_version", sa.String(length=64), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contract_id", "request_id", name=op.f("pk_ledger_held")),
    )


def downgrade() -> None:
    op.drop_table("ledger_held")
