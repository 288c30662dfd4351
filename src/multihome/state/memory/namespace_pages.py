"""Pages of a tenant's memory namespaces (the client's `/v1/memory/namespaces`, the admin API's list): by agent and
user, after a cursor that is a place in that order, the agent and user of the page's last namespace. A namespace id
says nothing of where its row was: a namespace deleted between two pages left its id no cursor (a 400, the walk
restarted), while a place is compared with `>` whether or not a namespace is still there. (An agent and a user name
one namespace of a tenant, so the place alone orders the rows.)"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec
import sqlalchemy as sa

from ...schema.errors import echo
from ...schema.memory import MAX_ID
from ...storage.errors import Invalid
from ...storage.row_reads import past
from ...storage.tables import memory_namespaces

PREFIX = "nsc_"
# Two ids of MAX_ID printable characters, JSON-escaped (a quote or backslash doubles) and in base64: well under it.
MAX_CURSOR = 2048
_ns = memory_namespaces.c
ORDER = (_ns.agent_id, _ns.user_id)
_place = msgspec.json.Decoder(tuple[str, str])


def cursor(agent_id: str, user_id: str) -> str:
    """The `after` of the page that follows the namespace of `agent_id` and `user_id`."""
    packed = base64.urlsafe_b64encode(msgspec.json.encode((agent_id, user_id))).decode("ascii")
    return PREFIX + packed.rstrip("=")


def place(after: str) -> tuple[str, str] | None:
    """The (agent, user) a cursor names; None when `after` is no cursor (an id of one, not bound to a query: a NUL
    or lone surrogate in it would be a 500 on PostgreSQL)."""
    if not after.startswith(PREFIX) or len(after) > MAX_CURSOR:
        return None
    packed = after[len(PREFIX) :]
    try:
        agent, user = _place.decode(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    if all(len(v) <= MAX_ID and v.isprintable() for v in (agent, user)):
        return agent, user
    return None


async def page_ids(conn: Any, query: sa.Select, limit: int, after: str | None) -> tuple[list[str], bool, str | None]:
    """The ids of `query`'s namespaces (a select of memory_namespaces) by agent and user after `after`, `limit` at
    most, whether more follow, and the cursor of the page's last. `after` is a cursor, or the id of a namespace
    still in `query` (what the lists answered as `last_id` before cursors); Invalid (a 400) otherwise."""
    if after is not None:
        mark = place(after)
        if mark is None and after.isprintable():  # a namespace's id, looked up where it is in the order
            mark = (await conn.execute(query.with_only_columns(*ORDER).where(_ns.id == after))).first()
        if mark is None:
            raise Invalid(f"after: '{echo(after)}' is not a cursor of this list (its last_id)", field="after")
        query = query.where(past(ORDER, tuple(mark)))
    rows = (await conn.execute(query.with_only_columns(_ns.id, *ORDER).order_by(*ORDER).limit(limit + 1))).all()
    page = rows[:limit]
    return [r[0] for r in page], len(rows) > limit, cursor(page[-1][1], page[-1][2]) if page else None
