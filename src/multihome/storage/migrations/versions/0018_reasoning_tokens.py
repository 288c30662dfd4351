"""usage_calls.reasoning_tokens: the reasoning part of a call's completion tokens

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03

The column is defined in multihome/metering/tables.py and filled by multihome/metering/service.py
(docs/metering.md "Reasoning tokens"). Existing rows read 0: their upstreams' reasoning was not split out.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_calls") as batch:
        batch.add_column(sa.Column("reasoning_tokens", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_calls") as batch:
        batch.drop_column("reasoning_tokens")
