"""Admin resource: a tenant's stateful-work pins (where its background jobs, agent-run steps, stored
turns and memory embeddings may be hosted, time-bound; policy/pins.py, docs/policy.md).

Pins record what a contract grants (one cloud's exclusive right to host a tenant's stateful runtime),
so, like entitlements, an org-admin sets them. A pin must name providers and data zones the catalog
has: a name that matches no deployment is a typo, and a typo here would refuse all stateful work.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

from ...policy.pins import StatefulPin, pin_problems
from ...schema.errors import ApiError
from ...storage.rows import Unreadable
from . import bodies as B
from .pages import QUERY, SAYS, asked, paged
from .rbac import ORG, READ
from .route import STORAGE, AdminCall, Route, Services, unreadable_row
from .tenancy import T

P = T + "/{tenant}/stateful-pins"


async def list_stateful_pins(s: Services, c: AdminCall) -> Any:
    return paged(await s.store.page_pins(c.tenant, *asked(c), include_revoked=True))


async def create_stateful_pin(s: Services, c: AdminCall) -> Any:
    body: B.CreateStatefulPin = c.body
    valid_from = body.valid_from or dt.datetime.now(dt.UTC)
    providers, zones = s.gate.places if s.gate is not None else (None, None)
    draft = StatefulPin(
        id="new",
        tenant_id=c.tenant,
        providers=body.providers,
        data_zones=body.data_zones,
        work=body.work,
        valid_from=valid_from,
        valid_until=body.valid_until,
        note=body.note or None,
    )
    problems = pin_problems(draft, providers, zones)  # the store checks the fields again, without the catalog
    if problems:
        raise ApiError(400, "Invalid stateful pin: " + "; ".join(problems[:5]) + ".", code="invalid_value")
    return await s.store.create_pin(
        c.tenant,
        providers=body.providers,
        data_zones=body.data_zones,
        work=body.work,
        valid_from=valid_from,
        valid_until=body.valid_until,
        note=body.note,
        actor=c.who.subject,
    )


async def get_stateful_pin(s: Services, c: AdminCall) -> Any:
    return await s.store.get_pin(c.tenant, c.params["id"])


async def revoke_stateful_pin(s: Services, c: AdminCall) -> Any:
    done = await s.store.revoke_pin(c.tenant, c.params["id"], actor=c.who.subject)
    return unreadable_row(done, revoked=True) if isinstance(done, Unreadable) else done


_route = partial(Route, needs=STORAGE, noun="stateful pin")
ROUTES = (
    _route(
        "GET",
        P,
        READ,
        list_stateful_pins,
        "List stateful-work pins, oldest first, " + SAYS,
        query=QUERY,
        tenant_must_exist=True,
    ),
    _route(
        "POST",
        P,
        ORG,
        create_stateful_pin,
        "Pin a tenant's stateful work to providers and/or data zones, time-bound",
        B.CreateStatefulPin,
        status=201,
        event="stateful_pin.create",
    ),
    _route("GET", P + "/{id}", READ, get_stateful_pin, "Get a stateful-work pin"),
    _route("DELETE", P + "/{id}", ORG, revoke_stateful_pin, "Revoke a stateful-work pin", event="stateful_pin.revoke"),
)
