"""console session ends name the issuer, and the role that set a cut-off

Revision ID: 0028
Revises: 0027 (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-07

A cut-off by subject named only the subject, so "alice" of one OIDC issuer and "alice" of another were
both ended. From this revision a row names the issuer too: an identity.oidc issuer's exact `iss`, or
`api_key` (the subject is the key's own id) or `static` (the environment's keys). A row from before it
has no issuer (NULL) and keeps meaning what it meant: that subject of any issuer.

A tenant-admin may now end its own tenant's people's sessions; a cut-off it set never ends an org-admin's
or an auditor's session (roles it cannot grant), so each cut-off records the role that set it. Rows from
before this revision were all an org-admin's (only an org-admin could end sessions); a logout (kind
`session`) is its viewer's own and names no role.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("console_session_ends", schema=None) as batch_op:
        batch_op.add_column(sa.Column("issuer", sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column("set_by_role", sa.String(length=16), nullable=True))
    op.execute("UPDATE console_session_ends SET set_by_role = 'org-admin' WHERE kind <> 'session'")
    with op.batch_alter_table("console_session_ends", schema=None) as batch_op:
        batch_op.create_check_constraint(
            op.f("ck_console_session_ends_set_by_role"),
            "(kind = 'session' AND set_by_role IS NULL) OR "
            "(kind <> 'session' AND set_by_role IN ('org-admin', 'tenant-admin'))",
        )


def downgrade() -> None:
    with op.batch_alter_table("console_session_ends", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_console_session_ends_set_by_role"), type_="check")
        batch_op.drop_column("set_by_role")
        batch_op.drop_column("issuer")
