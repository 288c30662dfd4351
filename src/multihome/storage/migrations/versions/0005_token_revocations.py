"""token revocations: cut OIDC-authenticated access before a token's exp

Revision ID: 0005
Revises: 0004 (budgets)
Create Date: 2026-11-27

One row per revocation (a token by its jti, or every token of a subject issued up to a cut-off);
the table is defined in multihome/storage/tables.py. Every replica's authenticator reads the live
rows through the snapshot.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token_revocations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("issuer", sa.String(length=1000), nullable=False),
        sa.Column("subject", sa.String(length=400), nullable=True),
        sa.Column("jti", sa.String(length=400), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('jti', 'subject')", name=op.f("ck_token_revocations_kind")),
        sa.CheckConstraint(
            "(kind = 'jti' AND jti IS NOT NULL AND subject IS NULL AND not_before IS NULL) OR "
            "(kind = 'subject' AND subject IS NOT NULL AND jti IS NULL AND not_before IS NOT NULL)",
            name=op.f("ck_token_revocations_fields"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_token_revocations_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_revocations")),
    )
    with op.batch_alter_table("token_revocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_token_revocations_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_token_revocations_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("token_revocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_token_revocations_expires_at"))
        batch_op.drop_index(batch_op.f("ix_token_revocations_tenant_id"))
    op.drop_table("token_revocations")
