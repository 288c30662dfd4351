"""stateful_pins: where a tenant's stateful work may be hosted, time-bound

Revision ID: 0015
Revises: 0014 on the i16-pin branch (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-03

The table is defined in multihome/storage/tables.py and read by multihome/policy/pins.py through the
hot-path snapshot (docs/policy.md "Stateful-work pins").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stateful_pins",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("providers", sa.JSON(), nullable=True),
        sa.Column("data_zones", sa.JSON(), nullable=True),
        sa.Column("work", sa.JSON(), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name=op.f("ck_stateful_pins_validity")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_stateful_pins_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stateful_pins")),
    )
    op.create_index(op.f("ix_stateful_pins_tenant_id"), "stateful_pins", ["tenant_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_stateful_pins_tenant_id"), table_name="stateful_pins")
    op.drop_table("stateful_pins")
