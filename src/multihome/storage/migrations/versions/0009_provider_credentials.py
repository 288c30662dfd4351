"""provider credentials and content capture: sealed rows of purpose `credentials` and `capture`

Revision ID: 0009
Revises: 0008 (data keys)
Create Date: 2026-12-03

Tables defined in multihome/storage/tables.py and used only by multihome/crypto/credentials.py and
multihome/crypto/capture.py (docs/encryption.md). Both hold sealed bytes (envelope encryption under
the tenant's data key), never a credential, prompt or answer in clear.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_credentials",
        sa.Column("provider", sa.String(length=200), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprint", sa.String(length=4), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_provider_credentials")),
    )
    op.create_table(
        "captures",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint", sa.String(length=40), nullable=False),
        sa.Column("model_group", sa.String(length=200), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_captures")),
    )
    with op.batch_alter_table("captures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_captures_tenant_id_at"), ["tenant_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("captures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_captures_tenant_id_at"))
    op.drop_table("captures")
    op.drop_table("provider_credentials")
