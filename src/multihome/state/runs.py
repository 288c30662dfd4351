"""Agent runs as an operator sees them (`/admin/v1/tenants/{tenant}/runs`, `multihome runs`): the
background responses that run the agent loop (a response with `mcp` tools, api/responses/agent_job.py),
with their job and their progress — servers, step and tool-call counts, spend, usage — never a
prompt, an answer or a tool's arguments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..storage.errors import UnreadableRow
from ..storage.row_reads import Listed, unreadable
from ..storage.rows import DECODE_ERRORS, RowProblem, Unreadable, problem, stamp
from ..storage.tables import jobs, responses
from .background import KIND
from .store import StateStore, StoredResponse

SCAN = 1000  # background responses looked at per page at most (each is opened to see whether it is a run)


def mcp_servers_of(record: StoredResponse) -> list[str] | None:
    """The `server_label`s of a background response's `mcp` tools (as its Response echoes them); None
    when it is no agent run."""
    if record.background is None:
        return None
    tools = record.response.get("tools") or []
    labels = [str(t.get("server_label")) for t in tools if isinstance(t, dict) and t.get("type") == "mcp"]
    return labels or None


def _job_view(job: Any) -> dict[str, Any] | None:
    """The run's job as the view shows it; RowProblem (or a decode error) when its row cannot be read: SQLite
    keeps any value in any column, and a time that is not a time used to fail the whole list."""
    if job is None:
        return None
    if not (type(job.attempt) is int and type(job.max_attempts) is int and isinstance(job.status, str)):
        raise RowProblem("status, attempt or max_attempts is not of its type")
    return {
        "status": job.status,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "error": job.error,  # a class and a message, never content (state/jobs.py)
        "updated_at": int(stamp(job.updated_at).timestamp()),
    }


def run_view(record: StoredResponse, servers: list[str], job: Any) -> dict[str, Any]:
    journal = (record.background or {}).get("agent") or {}
    return {
        "id": record.id,
        "object": "agent_run",
        "status": record.status,
        "created_at": int(record.created_at.timestamp()),
        "model": record.response.get("model"),
        "servers": servers,
        "steps": journal.get("steps", 0),
        "tool_calls": journal.get("calls", 0),
        "spent": journal.get("spent", "0"),
        "usage": journal.get("usage"),
        "job": _job_view(job),
    }


def _unreadable_job(job: Any, tenant: str, exc: Exception) -> Unreadable:
    return Unreadable("jobs", str(job.job_id), tenant, problem(exc))


def _jobs_query(tenant: str) -> Any:
    return (
        sa.select(responses.c.id, jobs.c.status, jobs.c.attempt, jobs.c.max_attempts)
        # The job's time as stored, parsed per run (`_job_view`): one bad value must not fail the page.
        .add_columns(jobs.c.error, sa.type_coerce(jobs.c.updated_at, sa.Text).label("updated_at"))
        .add_columns(jobs.c.id.label("job_id"))
        .join(jobs, sa.and_(jobs.c.ref_id == responses.c.id, jobs.c.kind == KIND))
        .where(responses.c.tenant_id == tenant)
    )


async def list_runs(
    store: StateStore, tenant: str, limit: int, after: str | None
) -> tuple[Listed[dict[str, Any]], bool] | None:
    """The tenant's agent runs, newest first, `limit` of them after the run `after`; and whether there are
    more. None when `after` names none of the tenant's responses (a cursor no page gave)."""
    q = _jobs_query(tenant).order_by(responses.c.created_at.desc(), responses.c.id.desc()).limit(SCAN)
    async with store.engine.connect() as conn:
        if after is not None:
            since: datetime | None = await conn.scalar(
                sa.select(responses.c.created_at).where(responses.c.id == after, responses.c.tenant_id == tenant)
            )
            if since is None:
                return None
            q = q.where(
                sa.or_(responses.c.created_at < since, sa.and_(responses.c.created_at == since, responses.c.id < after))
            )
        rows = (await conn.execute(q)).all()
    out: Listed[dict[str, Any]] = Listed()
    bad: list[Unreadable] = []
    for row in rows:
        try:
            record = await store.get_response(tenant, row.id)
        except UnreadableRow as exc:  # named beside the page (may be a run: it cannot be told), not a failed list
            bad.append(Unreadable("responses", row.id, tenant, exc.problem))
            continue
        servers = mcp_servers_of(record) if record is not None else None
        if record is None or servers is None:
            continue
        if len(out) == limit:
            out.unreadable = tuple(bad)
            return out, True
        try:
            out.append(run_view(record, servers, row))
        except DECODE_ERRORS as exc:  # its job's row cannot be read: named beside the page, as its response would be
            bad.append(_unreadable_job(row, tenant, exc))
    out.unreadable = tuple(bad)
    return out, False


async def get_run(store: StateStore, tenant: str, run_id: str) -> tuple[StoredResponse, dict[str, Any]] | None:
    """The run (its stored response and its view), or None when the tenant has no such run."""
    record = await store.get_response(tenant, run_id)
    servers = mcp_servers_of(record) if record is not None else None
    if record is None or servers is None:
        return None
    async with store.engine.connect() as conn:
        job = (await conn.execute(_jobs_query(tenant).where(responses.c.id == run_id))).first()
    try:
        return record, run_view(record, servers, job)
    except DECODE_ERRORS as exc:
        raise unreadable("agent run's job", _unreadable_job(job, tenant, exc)) from None
