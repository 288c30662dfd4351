"""budget authority: record the role that set each budget

Revision ID: 0006
Revises: 0005 (token revocations)
Create Date: 2026-12-02

A budget an org-admin set is a cap a tenant-admin may tighten but not lift (docs/metering.md
"Who may change a budget"), so each row records the role that set or last changed it. Rows from
before this revision do not say who set them: they become org-admin budgets, so no cap an
org-admin set can be lifted by a tenant-admin; an org-admin can hand one back by deleting it for
the tenant-admin to create again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("set_by_role", sa.String(length=16), nullable=False, server_default="org-admin"))
        batch_op.create_check_constraint(op.f("ck_budgets_set_by_role"), "set_by_role IN ('org-admin', 'tenant-admin')")


def downgrade() -> None:
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_budgets_set_by_role"), type_="check")
        batch_op.drop_column("set_by_role")
