"""revocation authority: record the role that set each token revocation

Revision ID: 0024
Revises: 0023 (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-07

A tenant-admin revokes its tenant's OIDC tokens; it may not grant the org-admin or auditor roles, so
a revocation it set must not refuse a token that holds one (an auditor's oversight of it, an org
admin's access), and it must not lift a revocation an org-admin set (docs/oidc.md "Revocation").
So each row records the role that set it. Rows from before this revision do not say: they become
org-admin revocations, so every one keeps refusing what it refused, and none can be lifted by a
tenant-admin (an org-admin can).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("token_revocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("set_by_role", sa.String(length=16), nullable=False, server_default="org-admin"))
        batch_op.create_check_constraint(
            op.f("ck_token_revocations_set_by_role"), "set_by_role IN ('org-admin', 'tenant-admin')"
        )


def downgrade() -> None:
    with op.batch_alter_table("token_revocations", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_token_revocations_set_by_role"), type_="check")
        batch_op.drop_column("set_by_role")
