"""contract terms: agreements, the accrual ledger and its running totals

Revision ID: 0003
Revises: 0002 (metering)
Create Date: 2026-11-23

Tables are defined in multihome/contracts/tables.py (on the shared metadata). Importing that module
here registers them whenever the migrations are loaded, so the schema check compares them too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import multihome.contracts.tables  # noqa: F401  (registers contract_*/ledger_* on storage.tables.metadata)

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contract_agreements",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('revenue_share', 'commitment')", name=op.f("ck_contract_agreements_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contract_agreements")),
    )
    op.create_table(
        "ledger_accruals",
        sa.Column("contract_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("basis", sa.String(length=80), nullable=False),
        sa.Column("requested", sa.String(length=80), nullable=False),
        sa.Column("amount", sa.String(length=80), nullable=False),
        sa.Column("price_version", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contract_id", "request_id", name=op.f("pk_ledger_accruals")),
    )
    with op.batch_alter_table("ledger_accruals", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_accruals_contract_id_at", ["contract_id", "at"], unique=False)

    op.create_table(
        "ledger_totals",
        sa.Column("contract_id", sa.String(length=64), nullable=False),
        sa.Column("accrued", sa.String(length=80), nullable=False),
        sa.Column("requested", sa.String(length=80), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("capped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contract_id", name=op.f("pk_ledger_totals")),
    )


def downgrade() -> None:
    op.drop_table("ledger_totals")
    with op.batch_alter_table("ledger_accruals", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_accruals_contract_id_at")
    op.drop_table("ledger_accruals")
    op.drop_table("contract_agreements")
