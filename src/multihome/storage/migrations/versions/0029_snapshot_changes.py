"""snapshot_changes: which governance rows changed at which version, so a replica reloads only those

Revision ID: 0029
Revises: 0028 (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-07

Defined in multihome/storage/tables.py, read by multihome/storage/snapshot_load.py. A trigger on each table
the snapshot holds (tenants, teams, api_keys, policies, entitlements, stateful_pins, budgets,
token_revocations, console_session_ends) writes the id of every row inserted, updated or deleted (a cascade's
too) with no `seq`; the writing transaction stamps its rows with the version it bumped, under the counter's
row lock (storage/base.py `_write`). `state_version.changes_from` is the lowest version whose changes are
all still held: the rows before this revision have none, so it starts past the current version (a replica
always loads everything first).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

TABLES = (
    "tenants",
    "teams",
    "api_keys",
    "policies",
    "entitlements",
    "stateful_pins",
    "budgets",
    "token_revocations",
    "console_session_ends",
)

_PG_FUNCTION = """
CREATE FUNCTION snapshot_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO snapshot_changes (tbl, row_id) VALUES (TG_TABLE_NAME, OLD.id);
    ELSE
        INSERT INTO snapshot_changes (tbl, row_id) VALUES (TG_TABLE_NAME, NEW.id);
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "snapshot_changes",
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("tbl", sa.String(length=40), nullable=False),
        sa.Column("row_id", sa.String(length=40), nullable=False),
    )
    op.create_index(op.f("ix_snapshot_changes_seq"), "snapshot_changes", ["seq"], unique=False)
    with op.batch_alter_table("state_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("changes_from", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute("UPDATE state_version SET changes_from = version + 1")
    if _pg():
        op.execute(_PG_FUNCTION)
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION snapshot_changed()"
            )
        return
    for table in TABLES:
        for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            op.execute(
                f"CREATE TRIGGER {table}_{event.lower()}_changed AFTER {event} ON {table} "
                f"BEGIN INSERT INTO snapshot_changes (tbl, row_id) VALUES ('{table}', {row}.id); END"
            )


def downgrade() -> None:
    if _pg():
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_changed ON {table}")
        op.execute("DROP FUNCTION IF EXISTS snapshot_changed()")
    else:
        for table in TABLES:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_{event}_changed")
    with op.batch_alter_table("state_version", schema=None) as batch_op:
        batch_op.drop_column("changes_from")
    op.drop_index(op.f("ix_snapshot_changes_seq"), table_name="snapshot_changes")
    op.drop_table("snapshot_changes")


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"
