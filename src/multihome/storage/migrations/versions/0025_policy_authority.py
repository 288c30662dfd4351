"""policy authority: record the role that set each policy

Revision ID: 0025
Revises: 0024 (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-07

An org-admin's egress or residency policy on a tenant, a team or a key (an "EU-only" rule) is the
organisation's: the tenant's own admin may add policies of its own, which can only narrow what the
organisation's allow, but may not change or delete the organisation's (docs/policy.md "Who may change
a policy"). So each row records the role that set or last changed it. Rows from before this revision
do not say: they become org-admin policies, so no residency rule stored before it can be lifted by a
tenant-admin (an org-admin can change or delete any, and hand one back by deleting it for the
tenant-admin to create again).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("set_by_role", sa.String(length=16), nullable=False, server_default="org-admin"))
        batch_op.create_check_constraint(
            op.f("ck_policies_set_by_role"), "set_by_role IN ('org-admin', 'tenant-admin')"
        )


def downgrade() -> None:
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_policies_set_by_role"), type_="check")
        batch_op.drop_column("set_by_role")
