"""Admin resource: a tenant's agent runs, `/admin/v1/tenants/{tenant}/runs` — the background responses
that run the agent loop (docs/agents.md), their job, progress and steps; and cancelling one.

A run's steps come from the audit trail's `agent_step` events (which deployment served each model
step; each tool call's server, tool, idempotency key and the hashes of its arguments and result), so
what an operator sees here is what the trail proves. Nothing here shows a prompt, an answer or a
tool's arguments: those are the users' content, sealed in the response.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...audit.reader import Filters
from ...schema.errors import ApiError, echo
from ...state.runs import get_run, list_runs
from .pages import query_int
from .rbac import READ, WRITE
from .route import AdminCall, Needs, Route, Services, listed
from .tenancy import T

R = T + "/{tenant}/runs"
MAX_STEPS = 1000  # step events shown for one run at most
MAX_ID = 40  # longer response ids were never issued (api/responses/door.py)


def _not_found(run_id: str) -> ApiError:
    return ApiError(404, f"No agent run found with id '{echo(run_id)}'.", code="not_found")


async def list_agent_runs(s: Services, c: AdminCall) -> Any:
    limit = query_int(c.query, "limit", 1, 100, 20)
    assert limit is not None
    after = c.query.get("after") or None
    # A cursor is a run id: printable (PostgreSQL's text refuses a NUL: was a 500) and short.
    found = await list_runs(s.background.state, c.tenant, limit, after) if _run_id(after) else None
    if found is None:  # not an empty page, which a client would take for the end of the list
        shown = echo(after or "")
        raise ApiError(
            400,
            f"'after' must be the id of one of the tenant's runs (the last id of a page); got {shown!r}.",
            param="after",
            code="invalid_value",
        )
    runs, more = found
    return {**listed(runs), "has_more": more}


def _run_id(after: str | None) -> bool:
    """Whether `after` (None: no cursor) could be a run id."""
    return after is None or (len(after) <= MAX_ID and after.isprintable())


async def get_agent_run(s: Services, c: AdminCall) -> Any:
    found = await get_run(s.background.state, c.tenant, c.params["id"])
    if found is None:
        raise _not_found(c.params["id"])
    _, view = found
    steps = None  # unknown without an audit trail
    if s.audit_reader is not None:
        steps = await asyncio.to_thread(_steps, s.audit_reader, c.tenant, view["id"])
    return {**view, "steps_recorded": steps}


def _steps(reader: Any, tenant: str, run_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _, event in reader.iter_events(Filters(tenant=tenant, kind="agent_step")):
        body = event["body"]
        if body.get("run_id") == run_id:
            out.append(
                {
                    "time": event.get("time"),
                    "step": body.get("step"),
                    "action": body.get("action"),
                    "detail": body.get("detail"),
                }
            )
            if len(out) == MAX_STEPS:
                break
    return out


async def cancel_agent_run(s: Services, c: AdminCall) -> Any:
    found = await get_run(s.background.state, c.tenant, c.params["id"])
    if found is None:
        raise _not_found(c.params["id"])
    record, _ = found
    await s.background.cancel_response(record)
    again = await get_run(s.background.state, c.tenant, record.id)
    return again[1] if again is not None else found[1]


_NEEDS = Needs(lambda s: s.background, "Agent runs need storage: set storage.url in the config.")
ROUTES = (
    Route(
        "GET",
        R,
        READ,
        list_agent_runs,
        "The tenant's agent runs (background responses with mcp tools), newest first: status, job, "
        "servers, step and tool-call counts, spend, usage (?limit= 1-100, default 20; ?after=<run id>); "
        "never content",
        query=("limit", "after"),
        tenant_must_have_existed=True,
        needs=_NEEDS,
    ),
    Route(
        "GET",
        R + "/{id}",
        READ,
        get_agent_run,
        "One agent run, with its steps from the audit trail (deployment per model step; server, tool, "
        "idempotency key and hashes per tool call; null without an audit trail)",
        needs=_NEEDS,
    ),
    Route(
        "POST",
        R + "/{id}/cancel",
        WRITE,
        cancel_agent_run,
        "Cancel an agent run (idempotent): it stops at its next checkpoint and keeps what it produced",
        event="run.cancel",
        refresh=False,
        needs=_NEEDS,
    ),
)
