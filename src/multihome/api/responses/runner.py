"""Runs a background response: the job handler of kind `response` (state/worker.py claims the job).

A run is a foreground turn without the HTTP connection: the same `Pipeline.run` (policy,
entitlements, budgets, failover, metering, audit) as the principal that created the response,
rebuilt from what was stored with it (the principal's ids and roles, never a credential). The
upstream is always streamed, so a cancel keeps the output produced so far; the events of a
response created with `stream: true` are persisted in batches (state/background.py) and only then
sent to the clients following it.

Exactly once (docs/responses.md "Background mode"): every run of one response uses the request id
stored with it, so its usage row and ledger accruals (keyed by request id) are written once however
often it runs. A run makes the usage durable, then stores the final response (the checkpoint), then
the job is done; a run that finds the response final returns without calling upstream. Only a run
that died between its upstream call and the checkpoint is repeated, and its repeat is billed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from ...accounting.tracker import finish_failed, settle
from ...aio import wait_event
from ...identity.stored_caller import StoredCaller
from ...policy.pins import BACKGROUND
from ...schema.errors import ApiError
from ...schema.principal import Principal
from ...schema.responses import CreateResponse, parse_create, runs_tools
from ...state.background import OPEN, BackgroundStore, Event
from ...state.feed import Feed
from ...state.jobs import Job
from ...state.store import StoredResponse
from ...storage.errors import outage as db_outage
from ..openai.errors import upstream_client_error
from ..pipeline import Call, Pipeline, finish_refused
from .agent import AgentSetup
from .agent_job import run_agent
from .common import abandon, outage, run_turn
from .final_turn import failed, write_final
from .items import Item
from .outage_wait import through_outage
from .stream import ResponsesStream, split_events
from .thinking import ThinkingKeys
from .translate import Shell, to_canonical

log = logging.getLogger("multihome.responses.background")
ADDED = b"event: response.output_item.added\n"
# A run's context, its input checked against it again, and the conversation's end then (door.py `run_context`)
Context = Callable[[str, CreateResponse, list[Item]], Awaitable[tuple[list[Item], int | None]]]


class BackgroundShell(Shell):
    """A background response's Response object: `background: true` in every snapshot."""

    __slots__ = ()

    def render(self, status: str, output: list[Item], usage: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        out = super().render(status, output, usage, **kw)
        out["background"] = True
        return out


def shell_of(record: StoredResponse) -> tuple[CreateResponse, BackgroundShell]:
    assert record.background is not None
    req = parse_create(record.background["request"].encode())
    return req, BackgroundShell(req, id=record.id, created_at=record.response["created_at"], store=True)


@dataclass(slots=True)
class _Run:
    record: StoredResponse
    converter: ResponsesStream
    streamed: bool
    pending: list[Event] = field(default_factory=list)
    stopped: bool = False  # cancelled or deleted: the store refused a write
    rerun: bool = False  # an earlier run of this turn was claimed (it died, or raised): it may have recorded the call
    end: int | None = None  # the conversation's end when the turn's tool call or result was checked (final_turn.py)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    more: asyncio.Event = field(default_factory=asyncio.Event)  # events are waiting to be written
    failing: bool = False  # persisting events fails for an outage: said once, not at every flush


class Runner:
    def __init__(
        self,
        pipeline: Pipeline,
        store: Callable[[], BackgroundStore],
        feed: Feed,
        *,
        flush_s: float,
        flush_usage: Callable[[], Awaitable[None]] | None = None,
        billed: Callable[[str], Awaitable[bool]] | None = None,
        mark: Callable[[str], None] | None = None,
        agent: AgentSetup | None = None,
        admitted: StoredCaller | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._store = store
        self.feed = feed
        self.context: Context | None = None  # rebuilds a turn's context (the door's; bound by handlers.py)
        self.flush_s = flush_s
        self.flush_usage = flush_usage  # makes the usage rows recorded so far durable (metering's writer)
        self.billed = billed  # whether a request id's usage row is stored (metering's `stored_row`)
        # Told at once after a turn's call is recorded (metering's `mark_recorded`): with Redis counters, so
        # that `billed` says so on any replica before this one's row is stored.
        self.mark = mark
        self.agent = agent or AgentSetup()  # runs with mcp tools (agent_job.py)
        # Whether the stored principal may still call (identity/stored_caller.py): asked before the run's
        # model call (each step's, for an agent run); None: not asked (no storage to ask).
        self.admitted = admitted
        self.store, self.scope, self.done = store, _scope, _done  # what agent_job.py shares

    async def run(self, job: Job) -> None:
        bg = self._store()
        record = await bg.get(job.tenant_id, job.ref_id)
        if record is None or record.status not in OPEN or record.background is None:
            return  # deleted, cancelled, or made final by an earlier run (the checkpoint): no upstream call
        req, shell = shell_of(record)
        shell.thinking = ThinkingKeys(lambda: bg.store.keyring).of(
            record.tenant
        )  # Claude's blocks sealed to the tenant
        if runs_tools(req):  # a durable agent run
            try:
                await run_agent(self, record, req, shell, rerun=job.attempt > 1)
            finally:
                self.feed.publish(record.id)
            return
        streamed = bool(req.stream)
        seq, base = 0, 0
        if streamed:  # continue after what was committed (a dead run's events are what clients saw)
            seq = await bg.last_seq(record.id) + 1
            if seq > 2:  # beyond response.created and response.queued: an earlier run had begun
                events = await bg.events_after(record.tenant, record.id, -1, 100_000)
                base = sum(1 for _, data in events if data.startswith(ADDED))
        # The job's attempt counts claims that did not end in a hand-back (state/jobs.py `release`).
        run = _Run(record, ResponsesStream(shell, seq=seq, base=base), streamed, rerun=job.attempt > 1)
        try:
            await self._run(run, req, shell)
        finally:
            self.feed.publish(record.id)

    async def _run(self, run: _Run, req: CreateResponse, shell: BackgroundShell) -> None:
        record, conv = run.record, run.converter
        info = record.background
        assert info is not None
        snapshot = shell.render("in_progress", [])
        first = conv.event("response.in_progress", {"response": snapshot}) if run.streamed else b""
        run.record = replace(record, status="in_progress", response=snapshot)
        if not await self._store().progress(run.record, split_events(first, conv), status="in_progress"):
            return
        self.feed.publish(record.id)
        call = Call(_scope(info), info["request_id"].encode())
        call.principal = msgspec.convert(info["principal"], Principal)
        call.work = BACKGROUND  # stateful work: the tenant's pins hold it (policy/pins.py)
        try:
            try:
                if self.admitted is not None:
                    await self.admitted(call.principal, info.get("token"))
                assert self.context is not None
                context, run.end = await self.context(record.tenant, req, record.input)
                body = info["request"].encode()
                turn = msgspec.structs.replace(req, stream=True)
                canonical, dropped = await to_canonical(turn, context, record.input, thinking=shell.thinking)
                served, _ = await run_turn(self.pipeline, call, body, canonical, dropped)
            except ApiError as err:
                if outage(err):  # the store or the KMS at the run's start (its context, say): tried again
                    raise
                finish_failed(call.tracker, err)
                await self._fail(run, shell, err)
                return
            if served.stream is None:  # the upstream refused the request (a client error)
                refused = upstream_client_error(served)
                finish_refused(call, served, refused, "client_error")
                await self._fail(run, shell, refused)
                return
            await self._relay(run, served)
            if run.stopped:
                await self._keep_partial(run, shell)
                await self._drop_if_billed(run, call, info["request_id"])
                return
            tail = conv.end()
            response = conv.response()
            if call.tracker is not None:
                billed = self.billed  # asked only of a run that follows one: a first run makes no query
                if run.rerun and billed is not None and await billed(info["request_id"]):
                    # An earlier run recorded this turn's call, then died (or its store failed) before its
                    # checkpoint: its row was kept, so this repeat records nothing (counted against the
                    # budgets once, as it is billed once; its reservation released).
                    abandon(call)
                else:
                    outcome = "stream_error" if response["status"] == "failed" else "ok"
                    call.tracker.finish_produced(served, 200, outcome)
                    if self.mark is not None:  # (no await between: one settlement batch with the call's counts)
                        self.mark(info["request_id"])
            await self._finish(run, shell, response, tail)
        except BaseException:
            # Cancelled (seen at a lease renewal), this replica closing (the job is handed back), its
            # lease lost, or the run raised (the job is retried): a cancelled response keeps what was
            # produced and this run is its last; any other run is abandoned to the next one.
            cancelled = False
            with contextlib.suppress(Exception):
                cancelled = await asyncio.shield(self._keep_partial(run, shell))
            if not cancelled:
                abandon(call)
            else:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._drop_if_billed(run, call, info["request_id"]))
            raise
        finally:
            settle(call.tracker)

    async def _drop_if_billed(self, run: _Run, call: Call, request_id: str) -> None:
        """A cancelled repeat is billed for what it produced, unless an earlier run of the turn recorded its
        call (died before its checkpoint): that row stands, and the partial would count on top of it."""
        billed = self.billed
        if run.rerun and billed is not None and await billed(request_id):
            abandon(call)

    async def _relay(self, run: _Run, served: Any) -> None:
        relay, conv = served.stream, run.converter
        flusher = asyncio.create_task(self._flush_loop(run, relay))
        try:
            self._take(run, conv.feed(served.first))
            if not conv.finished:
                async for piece in relay.rest():
                    self._take(run, conv.feed(piece))
                    if conv.finished or run.stopped:
                        break
        finally:
            run.closing.set()
            run.more.set()
            try:
                await flusher
            finally:
                relay.close()

    def _take(self, run: _Run, data: bytes) -> None:
        if run.streamed and data:
            run.pending += split_events(data, run.converter)
            run.more.set()

    async def _flush_loop(self, run: _Run, relay: Any) -> None:
        """Persist the events waiting as soon as there are some, at most once per `flush_s` (so a
        first delta is not held back, and a fast stream is written in batches); with nothing to write,
        look every `flush_s` whether the response was cancelled. Each write also learns of a cancel."""
        while not run.closing.is_set():
            await wait_event(run.more, self.flush_s)
            if run.closing.is_set():
                return
            run.more.clear()
            batch = run.pending[:]
            try:
                open_ = await self._store().progress(run.record, batch)
            except Exception as exc:
                open_ = True
                why = db_outage(exc)  # the database away or read-only (a standby): one line per outage, kept events
                if why is None or not run.failing:
                    log.warning(
                        "background response %s: persisting events failed (%s); retrying",
                        run.record.id,
                        why or type(exc).__name__,
                        exc_info=why is None,
                    )
                run.failing = why is not None
            else:
                if run.failing:
                    run.failing = False
                    log.info("background response %s: persisting events again", run.record.id)
                del run.pending[: len(batch)]
                if batch:
                    self.feed.publish(run.record.id)
            if not open_:
                run.stopped = True
                relay.cut("The response was cancelled.", "cancelled")
                return
            await wait_event(run.closing, self.flush_s)  # the batching interval

    async def _finish(
        self,
        run: _Run,
        shell: BackgroundShell,
        response: dict[str, Any],
        tail: bytes = b"",
        err: ApiError | None = None,
    ) -> None:
        """Usage durable, then the final response and its last events in one write (the checkpoint)."""
        record, conv = run.record, run.converter
        if run.pending and not run.stopped:  # the clients following need not wait for the usage write
            try:
                if await self._store().progress(record, run.pending):
                    run.pending = []
                    self.feed.publish(record.id)
            except Exception as exc:  # an outage: the events go with the final write, which waits it out
                if db_outage(exc) is None:
                    raise
        events = [*run.pending, *split_events(tail, conv)] if run.streamed else []
        seq = conv.next_seq if run.streamed else None
        final = replace(record, status=response["status"], response=response, background=_done(record))

        async def checkpoint() -> bool:
            if self.flush_usage is not None:
                await self.flush_usage()
            return await write_final(self._store(), final, events, shell, seq, run.end, err)

        if not await through_outage(record.id, checkpoint):
            await self._keep_partial(run, None)  # a cancel got there first

    async def _fail(self, run: _Run, shell: BackgroundShell, err: ApiError) -> None:
        await self._finish(run, shell, failed(shell, err), err=err)

    async def _keep_partial(self, run: _Run, shell: BackgroundShell | None) -> bool:
        """A cancelled response gets this run's output; False when the response is not cancelled."""
        record = run.record
        output = run.converter.outcome().output
        current = await self._store().get(record.tenant, record.id)
        if current is None or current.status != "cancelled":
            return False
        response = {**current.response, "output": output}
        await self._store().keep_partial(replace(current, response=response, background=_done(record)))
        return True


def _done(record: StoredResponse) -> dict[str, Any]:
    """What a final response keeps of its run: whether it streamed (resuming needs it), an agent run's
    counters (the admin API's run views), not the request."""
    info = record.background or {}
    done = {"stream": info.get("stream", False), "request_id": info.get("request_id"), "final": True}
    journal = info.get("agent")
    if journal:
        done["agent"] = {k: journal[k] for k in ("started_at", "steps", "calls", "usage", "spent") if k in journal}
    return done


def _scope(info: dict[str, Any]) -> dict[str, Any]:
    """The ASGI scope the pipeline reads of a call: a background run narrows routing as its request did."""
    headers = []
    if info.get("deployments"):
        headers.append((b"x-multihome-deployments", info["deployments"].encode()))
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/responses",
        "raw_path": b"/v1/responses",
        "query_string": b"",
        "headers": headers,
    }
