"""Background mode of `/v1/responses` (docs/responses.md "Background mode"): create a queued response
and its job, follow or resume its event stream, cancel it; and the service that runs the jobs
(state/worker.py with the `response` runner) and sweeps expired responses (retention) on every
replica that has storage.

A create answers at once: the response is `queued` and its job stored in the same transaction. Any
replica's worker may run it; polling with GET works on any replica. A client following the stream
(the create with `stream: true`, or `GET ?stream=true&starting_after=N`) is sent committed events
only: woken by the run when it is on this replica, else by polling the store every `poll_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ...aio import wait_event
from ...config.env import env_secret
from ...config.responses import ResponsesConfig
from ...identity.stored_caller import StoredCaller
from ...policy.pins import AGENT_STEP, BACKGROUND
from ...schema.errors import ApiError, bad_request
from ...schema.responses import CreateResponse, runs_tools
from ...state.background import KIND, OPEN, BackgroundStore, TooManyOpen
from ...state.feed import Feed
from ...state.idempotency import IdempotencyKeys
from ...state.jobs import Job, JobQueue
from ...state.store import StateStore, StoredResponse
from ...state.worker import JobWorker
from ..asgi import Receive, Send, single
from ..pipeline import Call, Pipeline, new_request_id
from .agent import AgentSetup
from .common import answer, send_sse, stored
from .final_turn import closing
from .items import Item
from .runner import BackgroundShell, Runner, shell_of
from .stream import ResponsesStream, split_events
from .tenant_share import TenantShare
from .translate import as_published

log = logging.getLogger("multihome.responses.background")
SWEEP = "retention"  # the job kind of a retention sweep
_CANCEL_WAIT_S = 2.0  # how long a cancel waits for the run to hand over the output it had produced
_ORPHAN_CHECK_S = 5.0  # how often a follower of an open response with nothing new looks at its job


class Background:
    def __init__(
        self,
        pipeline: Pipeline,
        state: StateStore,
        config: ResponsesConfig,
        *,
        flush_usage: Callable[[], Awaitable[None]] | None = None,
        billed: Callable[[str], Awaitable[bool]] | None = None,
        mark: Callable[[str], None] | None = None,
        agent: AgentSetup | None = None,
        admitted: StoredCaller | None = None,
        token_facts: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        self.state = state  # the StateStore (a stand-in until storage has started)
        self.config = config
        self.feed = Feed()
        # Streams followed on this replica, per tenant: each holds a connection and reads the store every poll.
        # A create's own stream counts, never refused (its response is stored; open creates are capped).
        self.streams = TenantShare(
            config.background.max_streams_per_tenant,
            "background response streams open",
            "responses.background.max_streams_per_tenant",
            "too_many_response_streams",
            "Close some, or poll GET /v1/responses/{id} without stream, and retry.",
        )
        self.store: BackgroundStore | None = None
        self.worker: JobWorker | None = None
        cfg = config.background
        self.runner = Runner(
            pipeline,
            self._bg,
            self.feed,
            flush_s=cfg.event_flush_ms / 1000,
            flush_usage=flush_usage,
            billed=billed,
            mark=mark,
            agent=agent or AgentSetup(config.agent),
            admitted=admitted,
        )
        self._sweeper: asyncio.Task[None] | None = None
        # The issuer, jti and iat of a create's OIDC token (Authenticator.token_facts), kept with its run so a
        # revocation of that token stops it (identity/stored_caller.py); None: no issuer is trusted.
        self._token_facts = token_facts

    def _bg(self) -> BackgroundStore:
        assert self.store is not None, "background responses before start-up"
        return self.store

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        queue = JobQueue(self.state.engine)
        self.store = BackgroundStore(self.state, queue)
        cfg = self.config.background
        self.worker = JobWorker(
            queue,
            {KIND: self.runner.run, SWEEP: self._sweep},
            concurrency=cfg.concurrency,
            per_tenant=cfg.max_running_per_tenant,
            lease_s=cfg.lease_s,
            poll_s=cfg.poll_s,
            replica_id=env_secret(cfg.replica_id_env, what="responses.background.replica_id_env"),
            gave_up={KIND: self._gave_up},
        )
        await self.worker.start()
        self._sweeper = asyncio.create_task(self._schedule_sweeps(), name="multihome-retention")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.worker is not None:
            await self.worker.close()  # running responses are handed back to the queue

    # -- create ----------------------------------------------------------------------------------------
    async def create(
        self, call: Call, receive: Receive, send: Send, req: CreateResponse, body: bytes, new: list[Item]
    ) -> None:
        """Queue the response and answer at once (`queued`), or follow its stream from the start."""
        assert call.principal is not None
        pipeline = self.runner.pipeline
        group = pipeline.group(req.model)  # an unknown model is a 404 now, not a failed run later
        if pipeline.gate is not None:  # so is a refusal of policy (a key's scopes...): nothing is stored
            work = AGENT_STEP if runs_tools(req) else BACKGROUND  # what the run's calls are (policy/pins.py)
            pipeline.gate.admit(call.principal, group, "responses", None, work)
        shell = BackgroundShell(req)
        queued = shell.render("queued", [])
        events: list[tuple[int, bytes]] = []
        if req.stream:
            conv = ResponsesStream(shell)
            first = conv.event("response.created", {"response": queued})
            first += conv.event("response.queued", {"response": queued})
            events = split_events(first, conv)
        narrowed = single(call.scope, b"x-multihome-deployments")
        run = {
            "request": body.decode(),
            # Who the run acts as: ids and roles only (Principal never holds a secret).
            "principal": msgspec.to_builtins(call.principal),
            "request_id": new_request_id(),  # one for every run of this response: billed once
            "stream": bool(req.stream),
            "deployments": narrowed.decode("latin-1") if narrowed is not None else None,
        }
        if self._token_facts is not None and call.principal.source.startswith("oidc:"):
            run["token"] = self._token_facts(call.scope)  # never the token itself
        record = StoredResponse(
            id=shell.id,
            tenant=call.principal.tenant,
            status="queued",
            response=queued,
            input=new,
            previous_response_id=req.previous_response_id,
            conversation_id=req.conversation_id,
            background=run,
        )
        cfg = self.config.background
        try:
            await stored(
                self._bg().create(record, events, max_attempts=cfg.max_attempts, max_open=cfg.max_open_per_tenant)
            )
        except TooManyOpen as exc:
            raise ApiError(
                429,
                f"Your tenant has {exc.cap} background responses queued or in progress, the gateway's limit "
                "(responses.background.max_open_per_tenant). Wait for some to finish, or cancel some, and retry.",
                type="requests",
                code="too_many_background_responses",
                headers={"retry-after": "1"},
            ) from None
        assert self.worker is not None
        self.worker.notify()
        if req.stream:
            await self.send_events(call, receive, send, record.tenant, record.id, -1, resumed=False)
        else:
            await answer(call, send, queued)

    # -- read, follow, cancel --------------------------------------------------------------------------
    async def current(self, found: StoredResponse) -> StoredResponse:
        """A background response as it is now: one left open by a job that ended is failed (a streamed
        one with its terminal `response.failed` event, which ends its followers' streams)."""
        if found.background is None or found.status not in OPEN:
            return found
        failed = {
            **found.response,
            "status": "failed",
            "error": {"code": "server_error", "message": "The background run failed repeatedly; retry the request."},
        }
        terminal: Callable[[int], list[tuple[int, bytes]]] | None = None
        if found.background.get("stream"):
            shell = shell_of(found)[1]

            def ended(seq: int) -> list[tuple[int, bytes]]:
                return closing(shell, seq, failed)

            terminal = ended
        return await stored(self._bg().settle_orphan(found, failed, terminal))

    async def _gave_up(self, job: Job) -> None:
        """The worker's hook for a response job failed for good (its runs kept dying): the response, still
        open, is failed now rather than at its next read."""
        found = await self._bg().get(job.tenant_id, job.ref_id)
        if found is not None:
            await self.current(found)
            self.feed.publish(found.id)

    def check_resumable(self, found: StoredResponse) -> None:
        if found.background is None or not found.background.get("stream"):
            raise bad_request(
                "Only a background response created with 'stream': true can be streamed again.", param="stream"
            )

    async def follow(
        self, tenant: str, response_id: str, after: int, at: list[int] | None = None
    ) -> AsyncIterator[bytes]:
        """The response's committed events after `after`, then the rest as they are committed, until
        the response is final (or gone). While it stays open with nothing new, its job is looked at every
        `_ORPHAN_CHECK_S`: a job that ended without finishing it (the worker's hook failed, or ran on no
        replica yet) has it failed here, so a follower is never left waiting for ever. `at[0]`: the last
        event's sequence number yielded (or `after`)."""
        bg, poll = self._bg(), self.config.background.poll_s
        checked = time.monotonic()
        with self.feed.subscribe(response_id) as woken:
            while True:
                woken.clear()
                # The status first: events committed with a final status are read next. Through `stored`: a
                # store that cannot be read ends the stream with an error event saying where to resume.
                status = await stored(bg.status(tenant, response_id))
                events = await stored(bg.events_after(tenant, response_id, after))
                if events:
                    after = events[-1][0]
                    if at is not None:
                        at[0] = after
                    yield b"".join(data for _, data in events)
                    continue  # there may be more than one page
                if status is None or status not in OPEN:
                    return
                if time.monotonic() - checked >= _ORPHAN_CHECK_S:
                    checked = time.monotonic()
                    found = await stored(bg.get(tenant, response_id))  # (as the reads above)
                    if found is not None and (await self.current(found)).status not in OPEN:
                        continue  # its terminal event is read next
                await wait_event(woken, poll)

    async def send_events(
        self,
        call: Call,
        receive: Receive,
        send: Send,
        tenant: str,
        response_id: str,
        after: int,
        *,
        resumed: bool = True,
    ) -> None:
        """Follow the response's stream after `after` (`follow`). Ended by the drain deadline (this replica
        stopping) or by a store it cannot read (the database restarting), it ends with an `error` event
        saying where to resume (the run goes on: handed back, any replica resumes it), whose
        `sequence_number` is the last event's sent: `starting_after` for the resume. A resume (`resumed`)
        past the tenant's share of streams on this replica is a 429 before anything is sent (tenant_share.py)."""
        at = [after]

        def closing(reason: str, code: str) -> bytes:
            message = (
                f"This stream was ended ({reason.rstrip('.')}). The response goes on: resume its stream on any "
                f"replica with GET /v1/responses/{response_id}?stream=true&starting_after={at[0]}."
            )
            payload = {"type": "error", "code": code, "message": message, "param": None, "sequence_number": at[0]}
            return b"event: error\ndata: " + msgspec.json.encode(payload) + b"\n\n"

        with self.streams.held(tenant, may_refuse=resumed):
            await send_sse(call, receive, send, self.follow(tenant, response_id, after, at), closing=closing)

    async def cancel(self, call: Call, send: Send, found: StoredResponse) -> None:
        """`POST /v1/responses/{id}/cancel` on a background response."""
        await answer(call, send, as_published(await self.cancel_response(found)))  # as GET reads it

    async def cancel_response(self, found: StoredResponse) -> dict[str, Any]:
        """Cancel a background response (idempotent): `cancelled` at once, with the output its run had
        produced when it is handed over within a moment; the response as it then is."""
        if found.status not in OPEN:
            return found.response
        cancelled = {k: v for k, v in found.response.items() if k != "usage"}  # a cancelled turn reports none
        cancelled["status"] = "cancelled"
        now, running = await stored(self._bg().cancel(found, cancelled))
        if running:  # the run stops at its next write (this replica or another) and hands its output over
            deadline = time.monotonic() + _CANCEL_WAIT_S
            while time.monotonic() < deadline:
                latest = await stored(self._bg().get(found.tenant, found.id))
                if latest is None:
                    break
                now = latest
                if latest.background is not None and latest.background.get("final"):
                    break
                await asyncio.sleep(0.05)
        self.feed.publish(found.id)
        return now.response

    # -- retention -------------------------------------------------------------------------------------
    async def _schedule_sweeps(self) -> None:
        """Every `sweep_interval_s`, queue the sweep of that interval: the jobs' unique (kind, ref_id)
        lets one replica's insert win, and one worker runs it. Queued even when responses are kept
        until deleted: expired Idempotency-Keys are swept by the same job."""
        cfg = self.config.retention
        while True:
            bucket = int(time.time() // cfg.sweep_interval_s)
            try:
                assert self.store is not None
                await self.store.queue.enqueue(SWEEP, "-", f"sweep_{bucket}", max_attempts=1)
                assert self.worker is not None
                self.worker.notify()
            except Exception as exc:  # another replica queued this interval's sweep (or the database is down)
                log.debug("retention sweep not queued here: %s", type(exc).__name__)
            await asyncio.sleep(cfg.sweep_interval_s)

    async def _sweep(self, job: Any) -> None:
        cfg = self.config.retention
        now = datetime.now(UTC)
        deleted = await self._bg().sweep(cfg.ttl_s, dict(cfg.tenants), now)
        keys = await IdempotencyKeys(self.state.engine).sweep()
        await self._bg().queue.purge(SWEEP, now - timedelta(seconds=10 * cfg.sweep_interval_s))
        if deleted:
            log.info("retention: deleted %d stored responses past their tenant's TTL", deleted)
        if keys:
            log.info("retention: deleted %d expired Idempotency-Keys", keys)


def starting_after(raw: dict[str, list[str]]) -> int:
    value = raw.get("starting_after", ["-1"])[-1].strip()
    # ASCII digits only and a bounded size: a 30-digit number would overflow the database's integer.
    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 9):
        raise ApiError(400, "'starting_after' must be an integer (a sequence_number).", param="starting_after")
    return max(int(value), -1)
