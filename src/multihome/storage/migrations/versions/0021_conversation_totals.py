"""conversation totals: each conversation's item count and their plaintext bytes, kept with its row

Revision ID: 0021
Revises: 0020 on the hostile-input branch (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-06

Defined in multihome/storage/tables.py, kept by multihome/state/store.py in the transaction that adds or
deletes items: a conversation's bound (`responses.conversations`, docs/responses.md "How state is kept")
is checked against these two numbers, not by counting its items at every add and turn. Existing
conversations get theirs counted once here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("item_count", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("item_bytes", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE conversations SET "
        "item_count = (SELECT COUNT(*) FROM conversation_items i WHERE i.conversation_id = conversations.id), "
        "item_bytes = (SELECT COALESCE(SUM(i.size), 0) FROM conversation_items i "
        "WHERE i.conversation_id = conversations.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("item_bytes")
        batch_op.drop_column("item_count")
