"""memory_namespaces, memory_records, memory_tombstones: long-term agent memory, sealed

Revision ID: 0014
Revises: 0013 on the i16-memory branch (the lead sets 0014 at merge: another branch adds it)
Create Date: 2026-12-03

The tables are defined in multihome/storage/tables.py and used only by multihome/state/memory/.
A record's text, metadata and embedding are sealed under the tenant's `memory` data key; the clear
columns hold ids, sequence numbers, times and sizes. No database extension is needed: vector and
keyword search run over the opened records in the gateway's memory (docs/memory.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memory_namespaces",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("agent_id", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("default_ttl_s", sa.BigInteger(), nullable=True),
        sa.Column("next_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_namespaces")),
        sa.UniqueConstraint(
            "tenant_id", "agent_id", "user_id", name=op.f("uq_memory_namespaces_tenant_id_agent_id_user_id")
        ),
    )
    op.create_index(
        op.f("ix_memory_namespaces_tenant_id_user_id"), "memory_namespaces", ["tenant_id", "user_id"], unique=False
    )
    op.create_table(
        "memory_records",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("namespace_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["memory_namespaces.id"],
            name=op.f("fk_memory_records_namespace_id_memory_namespaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_records")),
        sa.UniqueConstraint("namespace_id", "seq", name=op.f("uq_memory_records_namespace_id_seq")),
    )
    op.create_index(op.f("ix_memory_records_expires_at"), "memory_records", ["expires_at"], unique=False)
    op.create_table(
        "memory_tombstones",
        sa.Column("namespace_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["memory_namespaces.id"],
            name=op.f("fk_memory_tombstones_namespace_id_memory_namespaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("namespace_id", "seq", name=op.f("pk_memory_tombstones")),
    )


def downgrade() -> None:
    op.drop_table("memory_tombstones")
    op.drop_index(op.f("ix_memory_records_expires_at"), table_name="memory_records")
    op.drop_table("memory_records")
    op.drop_index(op.f("ix_memory_namespaces_tenant_id_user_id"), table_name="memory_namespaces")
    op.drop_table("memory_namespaces")
