"""Usage tables, on the storage package's shared metadata (so the schema check sees them).

Costs are stored twice: `cost` is the exact Decimal as text (SQLite has no exact decimal type;
NUMERIC there is a float), `cost_nanos` is the same amount in integer nano-units (half-even) so
SQL can sum it exactly on both backends.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..storage.tables import metadata

TS = sa.DateTime(timezone=True)

usage_calls = sa.Table(
    "usage_calls",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),  # idempotency: a retried batch never counts twice
    sa.Column("started_at", TS, nullable=False),
    sa.Column("finished_at", TS, nullable=False),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("team_id", sa.String(64), nullable=True),
    sa.Column("key_id", sa.String(200), nullable=False),  # the key id, else the subject (see metering.rules)
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("model_group", sa.String(200), nullable=False),
    sa.Column("deployment", sa.String(200), nullable=True),
    sa.Column("provider", sa.String(200), nullable=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=False),
    # The reasoning part of completion_tokens (already counted there); 0 when the upstream does not say.
    sa.Column("reasoning_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("estimated", sa.Boolean(create_constraint=False), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("cost", sa.String(64), nullable=False),
    sa.Column("cost_nanos", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("price_version", sa.String(32), nullable=False),
    sa.Column("over_budget", sa.Boolean(create_constraint=False), nullable=False),
    sa.Index("ix_usage_calls_tenant_id_started_at", "tenant_id", "started_at"),
)

# Every price table a replica has used, by version: explains any stored cost after prices change.
usage_price_versions = sa.Table(
    "usage_price_versions",
    metadata,
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column(
        "prices", sa.Text, nullable=False
    ),  # canonical JSON: deployment -> {input, output, cached_input, currency}
    sa.Column("first_seen_at", TS, nullable=False),
)
