"""response_events: the persisted stream events of background responses (resuming with starting_after)

Revision ID: 0012
Revises: 0011 (jobs)
Create Date: 2026-12-03

The table is defined in multihome/storage/tables.py and used only by multihome/state/background.py
(docs/responses.md "Background mode"). `body` is sealed under the tenant's `responses` data key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "response_events",
        sa.Column("response_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("response_id", "seq", name=op.f("pk_response_events")),
    )


def downgrade() -> None:
    op.drop_table("response_events")
