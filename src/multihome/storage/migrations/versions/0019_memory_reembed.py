"""memory_namespaces.reembed_model, reembed_dim and memory_records.next_body: moving a namespace to another embedding model

Revision ID: 0019
Revises: 0018 on the i16-memory branch (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-03

Defined in multihome/storage/tables.py, used by multihome/state/memory/reembed.py (docs/memory.md
"Moving a namespace to another embedding model"): the model a re-embedding under way is moving the
namespace to, and each record sealed again with its vector of that model, until the switch. NULL in
existing rows: no re-embedding is under way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("memory_namespaces") as batch:
        batch.add_column(sa.Column("reembed_model", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("reembed_dim", sa.Integer(), nullable=True))
    with op.batch_alter_table("memory_records") as batch:
        batch.add_column(sa.Column("next_body", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("memory_records") as batch:
        batch.drop_column("next_body")
    with op.batch_alter_table("memory_namespaces") as batch:
        batch.drop_column("reembed_dim")
        batch.drop_column("reembed_model")
