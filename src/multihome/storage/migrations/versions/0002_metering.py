"""metering: usage rows and price-table versions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Tables are defined in multihome/metering/tables.py (on the shared metadata). Importing that module
here registers them whenever the migrations are loaded, so the schema check compares them too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import multihome.metering.tables  # noqa: F401  (registers usage_* on storage.tables.metadata)

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_calls",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("key_id", sa.String(length=200), nullable=False),
        sa.Column("endpoint", sa.String(length=32), nullable=False),
        sa.Column("model_group", sa.String(length=200), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=True),
        sa.Column("provider", sa.String(length=200), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("estimated", sa.Boolean(create_constraint=False), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("cost", sa.String(length=64), nullable=False),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("price_version", sa.String(length=32), nullable=False),
        sa.Column("over_budget", sa.Boolean(create_constraint=False), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_usage_calls")),
    )
    with op.batch_alter_table("usage_calls", schema=None) as batch_op:
        batch_op.create_index("ix_usage_calls_tenant_id_started_at", ["tenant_id", "started_at"], unique=False)

    op.create_table(
        "usage_price_versions",
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("prices", sa.Text(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_usage_price_versions")),
    )


def downgrade() -> None:
    op.drop_table("usage_price_versions")
    with op.batch_alter_table("usage_calls", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_calls_tenant_id_started_at")
    op.drop_table("usage_calls")
