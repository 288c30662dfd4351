"""memory_namespaces.embedding_model, embedding_dim: the model every vector of a namespace comes from

Revision ID: 0017
Revises: 0016 on the i16-embed branch (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-03

Defined in multihome/storage/tables.py, used by multihome/state/memory/store.py (docs/memory.md
"Embeddings"). Namespaces written before this revision were all embedded by the offline model (the only
one there was), so those with any change (`next_seq > 1`) are marked as its; the others have no vectors yet.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("memory_namespaces") as batch:
        batch.add_column(sa.Column("embedding_model", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("embedding_dim", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE memory_namespaces SET embedding_model = 'wordllama/l2_supercat/256', embedding_dim = 256 "
        "WHERE next_seq > 1"
    )


def downgrade() -> None:
    with op.batch_alter_table("memory_namespaces") as batch:
        batch.drop_column("embedding_dim")
        batch.drop_column("embedding_model")
