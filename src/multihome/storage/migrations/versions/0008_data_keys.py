"""data keys: wrapped data keys of envelope encryption, one row per data key of a (tenant, purpose)

Revision ID: 0008
Revises: 0007 (audit heads)
Create Date: 2026-12-02

The table is defined in multihome/storage/tables.py and used only by multihome/crypto/
(docs/encryption.md). It holds data keys wrapped by a key-encryption key in a KMS, never a
plaintext key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("kek_id", sa.String(length=1000), nullable=False),
        sa.Column("kek_version", sa.String(length=200), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('active', 'retired')", name=op.f("ck_data_keys_state")),
        sa.CheckConstraint("messages >= 0", name=op.f("ck_data_keys_messages")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_keys")),
    )
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_data_keys_tenant_id_purpose_state"), ["tenant_id", "purpose", "state"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_keys_tenant_id_purpose_state"))
    op.drop_table("data_keys")
