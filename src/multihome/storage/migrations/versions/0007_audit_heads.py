"""audit head registry: the newest checkpoint of every audit chain, apart from the audit files

Revision ID: 0007
Revises: 0006 (budget authority)
Create Date: 2026-12-02

One row per audit chain (docs/audit.md "Rollback"); the table is defined in
multihome/storage/tables.py. Writers upsert it whenever they checkpoint; `multihome audit verify`
compares the files against it, and `multihome audit heads export` copies it to a witness.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_heads",
        sa.Column("chain", sa.String(length=200), nullable=False),
        sa.Column("trail", sa.String(length=400), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.Column("final", sa.Boolean(create_constraint=False), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_heads")),
    )
    with op.batch_alter_table("audit_heads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_heads_trail"), ["trail"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_heads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_heads_trail"))
    op.drop_table("audit_heads")
