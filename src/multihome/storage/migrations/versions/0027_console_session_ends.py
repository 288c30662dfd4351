"""console session ends: a logout, or an org-admin's cut-off, ends console sessions on every replica

Revision ID: 0027
Revises: 0026 (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-07

One row per ended console session (by the random id its sealed cookie carries) or per cut-off (a
subject's sessions, or every subject's, issued at or before `not_before`); the table is defined in
multihome/storage/tables.py. Every replica reads the live rows through the snapshot
(docs/console.md "Ending sessions").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_session_ends",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("tenant_id", sa.String(length=40), nullable=True),
        sa.Column("subject", sa.String(length=400), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('session', 'subject', 'all')", name=op.f("ck_console_session_ends_kind")),
        sa.CheckConstraint(
            "(kind = 'session' AND session_id IS NOT NULL AND not_before IS NULL) OR "
            "(kind = 'subject' AND subject IS NOT NULL AND session_id IS NULL AND not_before IS NOT NULL) OR "
            "(kind = 'all' AND subject IS NULL AND session_id IS NULL AND not_before IS NOT NULL)",
            name=op.f("ck_console_session_ends_fields"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_session_ends")),
        sa.UniqueConstraint("session_id", name=op.f("uq_console_session_ends_session_id")),
    )
    with op.batch_alter_table("console_session_ends", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_session_ends_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("console_session_ends", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_session_ends_expires_at"))
    op.drop_table("console_session_ends")
