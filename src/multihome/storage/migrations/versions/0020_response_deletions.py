"""response_deletions: a count of deleted `responses` rows, kept by a trigger

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
    if _pg():
        op.execute(
            "CREATE FUNCTION response_deleted() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN UPDATE response_deletions SET n = n + 1; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER response_deleted AFTER DELETE ON responses FOR EACH ROW EXECUTE FUNCTION response_deleted()"
        )
    else:
        op.execute(
            "CREATE TRIGGER response_deleted AFTER DELETE ON responses "
            "BEGIN UPDATE response_deletions SET n = n + 1; END"
        )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS response_deleted" + (" ON responses" if _pg() else ""))
    if _pg():
        op.execute("DROP FUNCTION IF EXISTS response_deleted()")
    op.drop_table("response_deletions")


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"
