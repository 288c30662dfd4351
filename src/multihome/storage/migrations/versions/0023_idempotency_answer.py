"""idempotency answer: a `store: false` response's answer kept, sealed, with its Idempotency-Key

Revision ID: 0023
Revises: 0022 (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-06

Defined in multihome/storage/tables.py, written by multihome/state/idempotency.py `keep` in the one
transaction that marks the key done, before the answer is sent: a retry with the key is answered with
it (docs/responses.md "Idempotency-Key"), instead of a 409, or, after a replica died between its
answer and the key's mark, a second upstream call and a second bill.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answer", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("answer")
