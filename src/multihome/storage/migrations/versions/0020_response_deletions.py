"""response_deletions: a count of deleted `responses` rows, kept by a trigger on SQLite

Revision ID: 0020
Revises: 0019 on the turn-cost branch (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-04

Defined in multihome/storage/tables.py, read by multihome/state/store.py: a replica that holds a chain's
turns opened in memory reads this one row on each continued turn; while it has not moved since the turns
were last checked, none of them can have been deleted (by any replica, the retention sweep or by hand), so
the chain's ids need not be looked up again. The trigger counts every deleted row, whoever deletes it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("response_deletions", sa.Column("n", sa.BigInteger(), nullable=False))
    op.execute("INSERT INTO response_deletions (n) VALUES (0)")
    # Only SQLite reads the count (the loop's check of a held chain). On PostgreSQL a row trigger updating
    # one shared row would serialise every delete across replicas, and a retention sweep racing a client's
    # delete could deadlock on it; there the chain's ids are looked up as before.
    if not _pg():
        op.execute(
            "CREATE TRIGGER response_deleted AFTER DELETE ON responses "
            "BEGIN UPDATE response_deletions SET n = n + 1; END"
        )


def downgrade() -> None:
    if not _pg():
        op.execute("DROP TRIGGER IF EXISTS response_deleted")
    op.drop_table("response_deletions")


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"
