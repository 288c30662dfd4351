"""mcp_servers: the MCP servers an admin registered for each tenant, their headers sealed

Revision ID: 0013
Revises: 0011 (jobs; the lead renumbers at merge: another branch adds 0012)
Create Date: 2026-12-03

The table is defined in multihome/storage/tables.py and used only by multihome/tools/servers.py.
Header values (credentials) are sealed under the tenant's `credentials` data key, never in clear.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mcp_servers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("allowed_tools", sa.JSON(), nullable=True),
        sa.Column("require_approval", sa.JSON(), nullable=False),
        sa.Column("header_names", sa.JSON(), nullable=False),
        sa.Column("headers", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_servers")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_mcp_servers_tenant_id_name")),
    )


def downgrade() -> None:
    op.drop_table("mcp_servers")
