"""budgets on privileged keys: a tenant-admin's budget on an auditor's or org-admin's key becomes the org-admin's

Revision ID: 0026
Revises: 0025 (the lead renumbers at merge if another branch adds one)
Create Date: 2026-12-07

A tenant-admin may not set a budget on a key that holds a role only an org-admin grants (auditor,
org-admin): a cap on such a key is a change to it (docs/metering.md "Who may change a budget"). Budgets
a tenant-admin set on such keys before that rule still said `set_by_role = 'tenant-admin'`, which let
their tenant-admin change or delete them. They become the org-admin's, as 0006 did with every budget
stored before budgets said who set them (the gateway also refuses a tenant-admin any change to a budget
on such a key, whoever set it: storage/budgets.py). No column changes; a downgrade cannot tell which
rows it changed, so it changes none back.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

_ORG_GRANTED = frozenset({"org-admin", "auditor"})
_ROLES = frozenset({"org-admin", "tenant-admin", "auditor", "member"})


def _privileged(raw: str | None) -> bool:
    """Whether stored roles hold one only an org-admin grants, or cannot be read (as the gateway judges them)."""
    try:
        roles = json.loads(raw) if raw is not None else []
    except ValueError:
        return True
    if not isinstance(roles, list) or not all(isinstance(r, str) and r in _ROLES for r in roles):
        return True
    return not _ORG_GRANTED.isdisjoint(roles)


def upgrade() -> None:
    conn = op.get_bind()
    found = conn.execute(
        sa.text(
            "SELECT b.id, CAST(k.roles AS TEXT) FROM budgets b JOIN api_keys k "
            "ON k.tenant_id = b.tenant_id AND k.id = b.scope_id "
            "WHERE b.scope = 'key' AND b.set_by_role = 'tenant-admin'"
        )
    ).all()
    for budget_id, raw in found:
        if _privileged(raw):
            conn.execute(sa.text("UPDATE budgets SET set_by_role = 'org-admin' WHERE id = :id"), {"id": budget_id})


def downgrade() -> None:
    pass
