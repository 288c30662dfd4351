"""Alembic environment: always run with a connection handed in by multihome.storage.migrate."""

from __future__ import annotations

from alembic import context

from multihome.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through multihome.storage (Store.migrate / migrate_sync), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER TABLE goes through copy-and-move
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
