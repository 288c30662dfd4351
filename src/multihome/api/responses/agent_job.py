"""A background response with `mcp` tools: a durable agent run on the job queue (docs/agents.md "Durability").

The job handler (`Runner.run`) hands such a response here. The run is `AgentRun`'s loop with a
checkpoint: after every model step (its items, before any tool call runs) and after every tool call
(its result, before the next step) the metering writer is flushed (the step's usage row is durable),
then the response so far, the run's journal and the stream events since the last checkpoint are
committed in one transaction (`BackgroundStore.progress`). A run that finds a journal — its replica
died, or stopped and handed the job back — continues from it: completed model calls are not made
again, completed tool calls not run again; only the step that was in flight is repeated, under the
same request id (billed once) or idempotency key. The final response, its last events and its
conversation items are one more transaction (`finish`), as for any background response.

Events of a streamed run are committed at its checkpoints (a step's text deltas arrive when the
step ends), so a client resuming after any event N gets N+1, N+2, ... on any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import msgspec

from ...identity.stored_caller import bound
from ...schema.errors import ApiError
from ...schema.principal import Principal
from ...schema.responses import CreateResponse
from ...state.store import StoredResponse
from ...tools.resolver import McpResolver
from ...tools.servers import McpServerStore
from ...tools.toolbox import Toolbox
from ..pipeline import Call
from .agent import AgentRun, Journal, Stopped
from .common import outage, stored
from .final_turn import failed, write_final
from .outage_wait import through_outage
from .stream import split_events

if TYPE_CHECKING:
    from .runner import BackgroundShell, Runner


async def run_agent(
    runner: Runner, record: StoredResponse, req: CreateResponse, shell: BackgroundShell, *, rerun: bool = False
) -> None:
    """`rerun`: an earlier run of the job was claimed (it died, or raised), so the step it was in may have
    recorded its call before its checkpoint: repeated, that step is not recorded again (as in runner.py `_run`)."""
    bg = runner.store()
    info = record.background
    assert info is not None
    streamed = bool(req.stream)
    seq = await bg.last_seq(record.id) + 1 if streamed else 0
    saved = info.get("agent")
    journal = msgspec.convert(saved, Journal) if saved is not None else Journal()
    output: list[dict[str, Any]] = list(record.response.get("output") or []) if saved is not None else []
    pending: list[bytes] = []
    call = Call(runner.scope(info), info["request_id"].encode())
    call.principal = msgspec.convert(info["principal"], Principal)

    async def checkpoint(run: AgentRun) -> bool:
        events = split_events(b"".join(pending), run.conv) if pending else []
        pending.clear()
        snapshot = shell.render("in_progress", run.output, run.journal.usage)
        current = replace(with_journal(record, run.journal), status="in_progress", response=snapshot)

        async def write() -> bool:
            if runner.flush_usage is not None:
                await runner.flush_usage()  # the step's usage row is durable before the step is
            return await bg.progress(current, events, status="in_progress")

        # The step is done (its model call made, its tools called): through an outage its checkpoint waits for
        # the database rather than raising, which would have the job run the step again.
        done = await through_outage(record.id, write)
        runner.feed.publish(record.id)
        return done

    async def keep(response: dict[str, Any], terminal: bytes) -> None:
        events = split_events(b"".join(pending) + terminal, run.conv) if streamed else []
        pending.clear()
        seq = events.pop()[0] if events else None  # the terminal event's number: write_final makes it
        done = runner.done(with_journal(record, run.journal))
        final = replace(record, status=response["status"], response=response, background=done)

        async def write() -> bool:
            if runner.flush_usage is not None:
                await runner.flush_usage()
            return await write_final(bg, final, events, shell, seq, end)

        if not await through_outage(record.id, write):
            raise Stopped()

    try:
        if runner.admitted is not None:  # before its MCP servers are listed or an approved call runs
            await runner.admitted(call.principal, info.get("token"))
        servers = McpServerStore(bg.store.keyring, bg.store.engine)
        resolver = McpResolver(servers)
        resolved = [
            await stored(resolver.resolve(record.tenant, tool.mcp_spec(), f"tools[{i}]"))
            for i, tool in enumerate(req.tools or ())
            if tool.type == "mcp"
        ]
        assert runner.context is not None
        context, end = await runner.context(record.tenant, req, record.input)
        memory = runner.agent.memory_tools(record.tenant, req, call)
    except ApiError as err:  # the registration is gone, or the context: nothing ran
        if outage(err):  # the store or the KMS could not be read just now: the job is tried again
            raise
        await _failed(runner, record, shell, err, seq if streamed else None)
        return
    setup = runner.agent
    run = AgentRun(
        runner.pipeline,
        setup.limits,
        call,
        info["request"].encode(),
        req,
        shell,
        context,
        record.input,
        # An outage reading a registration raises (a 503 `stored` makes): the job is tried again, from the
        # checkpoint before the call, as when the run's context cannot be read.
        Toolbox(
            resolved,
            egress=setup.egress,
            registered=lambda view: stored(servers.unchanged(record.tenant, view, outage_raises=True)),
        ),
        keep,
        prices=setup.prices,
        output=output,
        journal=journal,
        checkpoint=checkpoint,
        seq=seq,
        memory=memory,
        recorded=runner.billed if rerun else None,
        mark=runner.mark,
        admitted=bound(runner.admitted, info.get("token")),
    )
    if record.status == "queued":  # the first run: in_progress, with its event, before anything is done
        snapshot = shell.render("in_progress", [])
        first = run.conv.event("response.in_progress", {"response": snapshot}) if streamed else b""
        current = replace(record, status="in_progress", response=snapshot)
        if not await bg.progress(current, split_events(first, run.conv), status="in_progress"):
            return
        runner.feed.publish(record.id)
    try:
        try:
            await run.begin()
        except ApiError as err:
            if outage(err):  # nothing with a side effect ran (AgentRun.begin): the job is tried again
                raise
            await _failed(runner, record, shell, err, run.conv.next_seq if streamed else None)
            return
        async for piece in run.events(start=False):
            if streamed:
                pending.append(piece)
    except (Stopped, asyncio.CancelledError) as exc:
        # Cancelled (seen at a checkpoint, or at a lease renewal while a step or tool ran) or deleted:
        # a cancelled response gets the output this run had made, and the cancel stops waiting for it.
        with contextlib.suppress(Exception):
            await asyncio.shield(_hand_over(runner, with_journal(record, run.journal), run.output))
        if isinstance(exc, asyncio.CancelledError):
            raise


def with_journal(record: StoredResponse, journal: Journal) -> StoredResponse:
    """The record with the run's journal as it is now (what its final form keeps of it: the counters)."""
    return replace(record, background={**(record.background or {}), "agent": msgspec.to_builtins(journal)})


async def _hand_over(runner: Runner, record: StoredResponse, output: list[dict[str, Any]]) -> None:
    bg = runner.store()
    current = await bg.get(record.tenant, record.id)
    if current is not None and current.status == "cancelled":
        response = {**current.response, "output": output}
        await bg.keep_partial(replace(current, response=response, background=runner.done(record)))


async def _failed(
    runner: Runner, record: StoredResponse, shell: BackgroundShell, err: ApiError, seq: int | None
) -> None:
    """The run could not begin: the response is failed (an `error` event first, when streamed)."""
    final = replace(record, status="failed", response=failed(shell, err), background=runner.done(record))
    await write_final(runner.store(), final, [], shell, seq, err=err)
