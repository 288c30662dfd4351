"""A response with `mcp` tools: the loop model -> MCP tools -> model, run by the gateway (docs/agents.md).

    run = AgentRun(pipeline, limits, call, body, req, shell, context, new, toolbox, keep)
    await run.begin()            # approvals answered, tools listed, the first model step admitted
    async for sse in run.events(): ...      # or: response = await run.result()

Each model step is a turn of its own through `run_turn` (policy, entitlements, budgets, failover,
metering, audit) under a request id of its own (`<request id>-<step>`), so every step is billed once
and may be served by another deployment than the last. The model is offered the servers' tools as
functions (`<label>__<tool>`); a call it makes runs on the MCP server and becomes an `mcp_call`
item holding the call and its result (or error) together; a tool that needs approval stops the
response with an `mcp_approval_request` item, which a later request answers with an
`mcp_approval_response` (the approved call then runs first). A request's `memory` tool adds
`memory_search` / `memory_write`, run the same way as calls of the reserved label `memory`
(state/memory/tools.py, docs/memory.md). The loop ends when the model answers
without calling an MCP tool, calls one of the client's own functions, asks for approval, or a limit
is reached (`incomplete`): steps, tool calls, the run's time budget or its spend cap.

The run's state is a `Journal`: the steps and calls made, the last model step's items still to be
handled (`todo`), usage and spend. A background run (agent_job.py) passes a `checkpoint` that
commits the journal with the response so far after every model step (before any of its tool calls
runs) and after every tool call (before the next), so a run resumed after a crash continues from
there: no completed model call is made again, no completed tool call runs again. Each tool call
carries an idempotency key (`<response id>/<step>/<item>`, in the MCP request's `_meta`), the same
in every run. Every model step and tool call is an `agent_step` audit event.

A foreground run whose client hangs up stops whole (docs/agents.md, "A client that hangs up"): a model
step in flight is cancelled with its upstream call (the request's task is cancelled only then: `_cut`), a
tool call in flight runs to its end, nothing comes after, and once a tool ran the response is kept
`cancelled` with what it did; nobody is answered (ClientGone). A background run runs on.

Upstream steps are always streamed (so the stream a client gets is live); a unary create drains the
same events. Before anything ran, a failure is the plain HTTP error a turn would give; after a tool
ran, the response is kept as `failed` with what was done, so no side effect is lost from the record.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import msgspec

from ...accounting.record import Usage
from ...accounting.tracker import finish_failed, settle
from ...audit.events import AgentStep
from ...config.responses import AgentConfig
from ...identity.stored_caller import Admitted
from ...metering.prices import PriceTable
from ...policy.pins import AGENT_STEP
from ...routing.attempts import Served
from ...schema.errors import ApiError, bad_request, echo, echo_quoted
from ...schema.responses import CreateResponse
from ...state.memory.store import MemoryStore
from ...state.memory.tools import WRITE, MemoryTools, parse_tool
from ...tools.egress import EgressPolicy
from ...tools.names import SEPARATOR
from ...tools.toolbox import Toolbox
from ..asgi import CANCEL_ON_HANG_UP, CLIENT_LEFT, HUNG_UP, ClientGone, Header, Scope
from ..memory_embeddings import caller_of
from ..openai.errors import upstream_client_error
from ..pipeline import Call, Pipeline, finish_refused
from ..read_only import may_write
from ..routes import in_scope
from .common import abandon, run_turn
from .items import Item, new_id
from .step_context import StepContext
from .stream import ResponsesStream, converted
from .translate import Shell, open_thinking

log = logging.getLogger("multihome.responses")

# Stores the final Response (with the stream's terminal event, for a background run's event log).
Keep = Callable[[dict[str, Any], bytes], Awaitable[None]]
# Commits the response so far with the run's journal; False: the response was cancelled or deleted.
Checkpoint = Callable[["AgentRun"], Awaitable[bool]]


class Stopped(Exception):
    """The response was cancelled (or deleted) while its run went on: the run ends without writing."""


class _Left(Exception):
    """A foreground run's client hung up: the run stops before its next model step or tool call."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Per response: the config's `responses.agent`, lowered (never raised) by the request's `multihome.agent`."""

    max_steps: int
    max_tool_calls: int
    max_run_s: float
    max_spend: Decimal | None  # in the deployments' price currency; None: no cap

    def narrowed(self, req: CreateResponse) -> Limits:
        asked = _agent_extension(req)
        steps = min(self.max_steps, asked.max_steps or self.max_steps)
        calls = min(self.max_tool_calls, req.max_tool_calls or self.max_tool_calls, asked.max_tool_calls or 1 << 30)
        run_s = min(self.max_run_s, asked.max_run_s or self.max_run_s)
        spend = self.max_spend
        if asked.max_spend is not None:
            cap = Decimal(str(asked.max_spend))
            spend = cap if spend is None else min(spend, cap)
        return Limits(steps, calls, run_s, spend)


@dataclass(frozen=True, slots=True)
class AgentSetup:
    """What agent runs take from the composition root: the limits (config `responses.agent`), the
    deployments' prices (a run's spend), the addresses MCP servers may be at (config `egress:`)."""

    config: AgentConfig = field(default_factory=AgentConfig)
    prices: PriceTable | None = None
    egress: EgressPolicy | None = None
    memory: MemoryStore | None = None  # the `memory` tool's store (None: no storage, so no memory tools)
    # Identifies a request's credential again (the gateway's Authenticator.authenticate, on its ASGI scope):
    # a foreground run asks before each model step, so a key revoked mid-run gets no further model call.
    identify: Callable[[dict[str, Any]], Awaitable[Any]] | None = None

    def again(self, call: Call) -> Admitted | None:
        """The check a foreground run of `call` makes before each model step (None: nothing to ask)."""
        identify, scope = self.identify, call.scope
        if identify is None:
            return None

        async def still(_: Any) -> None:
            await identify(scope)  # the request's own credential: 401/403 once it is revoked, expired, gone

        return still

    @property
    def limits(self) -> Limits:
        return limits_of(self.config)

    def memory_tools(self, tenant: str, req: CreateResponse, call: Call) -> MemoryTools | None:
        """The request's `memory` tool bound to the caller's tenant (docs/memory.md), or None; a 400 if bad.
        `call`: the response's, whose principal makes routed memory embeddings (api/memory_embeddings.py)."""
        at = next((i for i, t in enumerate(req.tools or ()) if t.type == "memory"), None)
        if at is None:
            return None
        assert req.tools is not None
        spec = parse_tool(req.tools[at].memory_spec(), f"tools[{at}]")
        own = frozenset(t.name for t in req.tools if t.type == "function" and t.name is not None)
        clash = next((name for name in spec.offered if name in own), None)
        if clash is not None:
            raise bad_request(f"A function tool may not be named '{clash}': the memory tool offers it.", param="tools")
        if call.principal is not None:  # the tool reads and writes what /v1/memory does: the same scope
            in_scope(call.principal, "memory")
            if WRITE in spec.offered:  # and a read-only caller only searches (allowed_tools: [memory_search])
                may_write(call.principal, f"the memory tool's {WRITE} (tools[{at}])")
        if self.memory is None:
            raise bad_request(
                "Memory tools need a database and a KMS: this gateway has none configured (docs/memory.md).",
                param=f"tools[{at}]",
                code="storage_not_configured",
            )
        return MemoryTools(self.memory, tenant, spec, caller_of(call, tenant), own)


def limits_of(config: AgentConfig) -> Limits:
    spend = Decimal(str(config.max_spend)) if config.max_spend is not None else None
    return Limits(config.max_steps, config.max_tool_calls, config.max_run_s, spend)


class _AgentAsk(msgspec.Struct, forbid_unknown_fields=True):
    max_steps: int | None = None
    max_tool_calls: int | None = None
    max_run_s: float | None = None
    max_spend: float | None = None


class _Ext(msgspec.Struct):
    agent: _AgentAsk | None = None


def _agent_extension(req: CreateResponse) -> _AgentAsk:
    """`{"multihome": {"agent": {"max_steps", "max_tool_calls", "max_run_s", "max_spend"}}}` (all optional, > 0)."""
    raw = bytes(req.multihome)
    if not raw:
        return _AgentAsk()
    try:
        asked = msgspec.json.decode(raw, type=_Ext).agent or _AgentAsk()
    except msgspec.DecodeError as exc:
        raise bad_request(f"Invalid 'multihome.agent': {echo_quoted(str(exc))}.", param="multihome.agent") from None
    for name in _AgentAsk.__struct_fields__:
        value = getattr(asked, name)
        if value is not None and value <= 0:
            raise bad_request(f"'multihome.agent.{name}' must be greater than 0.", param=f"multihome.agent.{name}")
    return asked


class Journal(msgspec.Struct, kw_only=True):
    """A run's state between checkpoints (kept sealed with its background response)."""

    started_at: float = msgspec.field(default_factory=time.time)
    steps: int = 0  # model steps made
    calls: int = 0  # tool calls made
    todo: list[Item] = msgspec.field(default_factory=list)  # the last model step's items, not yet handled
    stop: list[Any] | None = None  # [status, incomplete reason, error]: the loop ends once `todo` is done
    usage: dict[str, Any] | None = None
    spent: str = "0"  # Decimal as text


def approved(context: list[Item], new: list[Item], output: list[Item], offered: Callable[[str], bool]) -> list[Item]:
    """The approval requests `new` approves that have not run yet (in the context, the input or `output`),
    or a 400 before anything runs: an answer to a request not in the context, an approval to run whose
    server is not among the request's tools (`offered(label)`), or a second answer to one request (each
    approved copy would run the call again)."""
    seen = [*context, *new]
    asked = {i["id"]: i for i in seen if i.get("type") == "mcp_approval_request"}
    # Run already: in the context, this run's output, or the input (a stateless client replays its history,
    # the approval with the call it led to: the call was run again at every later turn).
    ran = {i.get("approval_request_id") for i in [*seen, *output] if i.get("type") == "mcp_call"}
    answered: dict[str, int] = {}
    out = []
    for n, item in enumerate(new):
        if item.get("type") != "mcp_approval_response":
            continue
        request = asked.get(item["approval_request_id"])
        if request is None:
            raise bad_request(
                f"input[{n}] answers approval request '{echo(item['approval_request_id'])}', which is not in this "
                "response's context: continue the response that asked (previous_response_id or conversation).",
                param=f"input[{n}].approval_request_id",
            )
        if request["id"] in answered:
            raise bad_request(
                f"input[{n}] answers approval request '{echo(request['id'])}', which input[{answered[request['id']]}] "
                "answers already: send one mcp_approval_response per request.",
                param=f"input[{n}].approval_request_id",
                code="duplicate_approval_response",
            )
        answered[request["id"]] = n
        if not item["approve"] or request["id"] in ran:
            continue  # nothing to run: a refusal, or an approval acted on already
        if not offered(request["server_label"]):
            raise bad_request(
                f"input[{n}] approves a call to MCP server '{request['server_label']}', which is not among this "
                "request's tools: send the mcp tool with that server_label again.",
                param="tools",
            )
        out.append(request)
    return out


class AgentRun:
    def __init__(
        self,
        pipeline: Pipeline,
        limits: Limits,
        call: Call,
        body: bytes,
        req: CreateResponse,
        shell: Shell,
        context: list[Item],
        new: list[Item],
        toolbox: Toolbox,
        keep: Keep,
        *,
        prices: PriceTable | None = None,
        output: list[Item] | None = None,
        journal: Journal | None = None,
        checkpoint: Checkpoint | None = None,
        seq: int = 0,
        memory: MemoryTools | None = None,
        recorded: Callable[[str], Awaitable[bool]] | None = None,
        mark: Callable[[str], None] | None = None,
        admitted: Admitted | None = None,
        foreground: Scope | None = None,
    ) -> None:
        self.pipeline = pipeline
        # A foreground run's request scope: a client that hangs up stops it (`_left`, `_hung_up`). A background
        # run (a job) has none: it runs on without its client.
        self._fg = foreground
        self._gone = False  # stopped because its client hung up
        self.limits = limits.narrowed(req)
        self.call = call
        self.body = body
        self.req = req
        # The client's own function names: a model's call of one is the client's, even if it reads like an MCP tool's.
        self._own = frozenset(t.name for t in req.tools or () if t.type == "function" and t.name is not None)
        self.shell = shell
        self.context = context
        self.new = new
        self.box = toolbox
        self.memory = memory  # the request's memory tools, run here like MCP tools (state/memory/tools.py)
        if memory is not None and memory.caller is not None:
            # Its routed embeddings are the run's calls, charged to the caller: they count in its spend.
            # A resumed background run's embeddings are recorded once, as its steps are (`recorded`, `mark`).
            memory.caller = replace(memory.caller, charged=self._add_charge, recorded=recorded, mark=mark)
        self.keep = keep
        self.prices = prices
        self.output: list[Item] = output if output is not None else []
        self.journal = journal or Journal()
        self._checkpoint = checkpoint
        # Whether a step's usage row is stored already (a resumed run only): its earlier run recorded it.
        self._recorded = recorded
        # A background run's: told at once after a step's call is recorded (metering's `mark_recorded`), so a
        # run that resumes on another replica finds it recorded before this one's row is stored.
        self._mark = mark
        # A background run's: whether its stored principal may still call, asked before each model step
        # (identity/stored_caller.py; a foreground run's caller was identified by its request).
        self._admitted = admitted
        self.headers: list[Header] = []
        self.conv = ResponsesStream(shell, seq=seq)  # the current step's converter: it numbers every event
        self._ran: list[Item] = []  # items made before the first step (approved calls, listings): their events
        self._served: Served | None = None  # the step admitted and waiting to be streamed
        self._step_call: Call | None = None
        self._failure: ApiError | None = None
        self._requests: StepContext | None = None  # built at the first model step
        self.response: dict[str, Any] | None = None

    # -- before the first byte ---------------------------------------------------------------------
    async def begin(self, first_step: bool = True) -> None:
        """Everything up to the first model step's answer (`first_step`). An ApiError here, before
        any tool ran, is the client's plain HTTP error; after one ran, the response ends `failed` with it."""
        approvals = self._approvals()  # checked before anything runs: a bad answer is a 400
        try:
            listed = await self.box.prepare([*self.context, *self.new, *self.output], new_id)
            self.output += listed
            self._ran += listed
            for request in approvals:
                await self._approved(request)
            if first_step and not self.journal.todo and self.journal.stop is None and not approvals:
                self._served = await self._model()
        except ApiError as err:
            if not self._acted():
                await self.box.close()
                raise  # nothing with a side effect ran: the client's plain error
            self._failure = err
        except (_Left, asyncio.CancelledError) as exc:
            self._cut(False)
            if isinstance(exc, asyncio.CancelledError) and not self._hung_up():
                self._end_step()
                await self.box.close()
                raise
            self._end_step()  # the first step, cut: charged for what it was sent and produced
            self._gone = True
            if not self._acted():
                await self.box.close()
                self.call.status = 499
                raise ClientGone() from None  # nothing with a side effect ran: nothing to keep, as a plain turn
        except BaseException:
            self._end_step()
            await self.box.close()
            raise

    def _approvals(self) -> list[Item]:
        """The approval requests this input approves that have not run yet."""
        return approved(self.context, self.new, self.output, lambda label: self.box.label(label) is not None)

    async def _approved(self, request: Item) -> None:
        found = self.box.find(request["server_label"], request["name"])
        if found is None:
            raise bad_request(
                f"Tool '{request['name']}' of MCP server '{request['server_label']}' is no longer offered to this "
                "request (allowed_tools, or the server's list).",
                param="tools",
            )
        item = {**request, "type": "mcp_call", "id": new_id("mcp")}
        item = await self._run_call(item, approval_request_id=request["id"])
        self.output.append(item)
        self._ran.append(item)

    # -- a foreground run's client hanging up ----------------------------------------------------------
    def _left(self) -> bool:
        """Whether a foreground run's client hung up (api/asgi.py client_gone)."""
        fg = self._fg
        return fg is not None and bool(fg.get(CLIENT_LEFT))

    def _cut(self, on: bool) -> None:
        """Whether a hang-up may cancel the run now: while a model step is in flight (its upstream call ends
        with it, charged for what it was sent and produced); never during a tool call or a write."""
        if self._fg is not None:
            self._fg[CANCEL_ON_HANG_UP] = on

    def _hung_up(self) -> bool:
        """In a CancelledError: whether it is the hang-up's cancel alone, taken back (the run then stops whole)."""
        fg = self._fg
        task = asyncio.current_task()
        if fg is None or not fg.get(HUNG_UP) or task is None or task.cancelling() != 1:
            return False  # a drain deadline, a shutdown: not the run's to handle
        task.uncancel()
        return True

    def _acted(self) -> bool:
        """Whether a tool call ran (a side effect outside the gateway, kept on record)."""
        return any(item["type"] == "mcp_call" for item in self.output)

    def _end_step(self) -> None:
        """The step in flight, ended outside its relay: a durable run leaves it to the run that resumes it
        (billed there, once); a foreground run's is charged for what it was sent and produced."""
        step = self._step_call
        if step is None:
            return
        if self._checkpoint is not None:
            abandon(step)
        else:
            settle(step.tracker)

    async def _model(self) -> Served:
        """The next model step, admitted and answering (its stream not read yet)."""
        if self._left():
            raise _Left()
        self._cut(True)
        try:
            return await self._admitted_step()
        except BaseException:
            self._cut(False)
            raise

    async def _admitted_step(self) -> Served:
        journal = self.journal
        journal.steps += 1
        thinking = self.shell.thinking
        if self._requests is None:  # the run's requests, each item converted once (step_context.py)
            functions = self.box.functions()
            if self.memory is not None:
                functions = [*functions, *self.memory.functions()]
            req = msgspec.structs.replace(self.req, stream=True)
            if thinking is not None:
                await open_thinking(req, thinking, self.context, self.new)
            self._requests = StepContext(req, self.context, self.new, functions, thinking)
        if thinking is not None:
            await thinking.open(self.output, None)  # a run resumed from its journal: blobs of earlier steps
        # After the first step one call was made: a `required` tool choice lets the model answer now.
        canonical, dropped = self._requests.request(self.output, tool_choice_auto=journal.steps > 1)
        step = Call(self.call.scope, self.call.request_id + f"-{journal.steps}".encode())
        step.principal = self.call.principal
        if self._admitted is not None:
            assert step.principal is not None  # a background run's, rebuilt from its record
            await self._admitted(step.principal)
        step.work = AGENT_STEP  # stateful work: the tenant's pins hold every step (policy/pins.py)
        self._step_call = step
        try:
            served, headers = await run_turn(self.pipeline, step, self.body, canonical, dropped)
        except ApiError as err:
            finish_failed(step.tracker, err)
            raise
        if served.stream is None:  # the upstream refused the request (a client error)
            refused = upstream_client_error(served)
            finish_refused(step, served, refused, "client_error")
            raise refused
        self.call.group, self.call.served = step.group, served
        if not self.headers:
            self.headers = headers
        return served

    def cut_events(self, reason: str, code: str) -> bytes:
        """A streamed foreground run ended where it stands (the drain deadline, api/drain.py): an `error`
        event and `response.failed`, as a foreground stream cut mid-answer ends. Not kept (a foreground run
        is stored once whole); the step in flight is settled by the closed generator."""
        message = f"The response was ended: {reason}; the answer is incomplete and was not stored. Retry the request."
        failed = self.conv.fail(message, code)
        response = self.shell.render("failed", self.output, self.journal.usage, error=self.conv.error)
        return failed + self.conv.terminal(response)

    # -- the loop ------------------------------------------------------------------------------------
    async def result(self) -> dict[str, Any]:
        async for _ in self.events(start=True):
            pass
        assert self.response is not None
        return self.response

    async def events(self, start: bool = True) -> AsyncIterator[bytes]:
        """The response's events, from response.created (`start`) to its terminal event (sent once it is kept)."""
        if start:
            yield self.conv.start()
        for item in self._ran:
            yield self._ended(item, self.output.index(item), announce=True)
        journal = self.journal
        try:
            if self._ran and self._failure is None:
                await self.checkpoint()
            try:
                while self._failure is None and not self._gone:
                    while journal.todo:  # the last step's items, in order: each call runs and is kept with its result
                        item = journal.todo[0]
                        if item["type"] == "mcp_call":
                            if self._left():
                                raise _Left()
                            item = await self._run_call(item)
                            yield self._ended(item, len(self.output))
                        self.output.append(item)
                        del journal.todo[0]
                        if item["type"] == "mcp_call":
                            await self.checkpoint()
                    if journal.stop is not None:
                        break
                    reason = self._limit()
                    if reason is not None:
                        journal.stop = ["incomplete", reason, None]
                        break
                    served = self._served
                    self._served = None
                    if served is None:
                        try:
                            served = await self._model()
                        except ApiError as err:
                            self._failure = err
                            break
                    async for piece in self._step(served):
                        yield piece
                    await self.checkpoint()  # the model's answer, before any of its calls runs
            except (_Left, asyncio.CancelledError) as exc:
                # A foreground run's client hung up: it stops whole. The step in flight ends with its upstream call
                # (settled below); the calls the last step asked for and that have not run are not made; what
                # ran stays, each call with its result.
                self._cut(False)
                if isinstance(exc, asyncio.CancelledError) and not self._hung_up():
                    raise
                self._gone = True
                journal.todo = []
        except BaseException:
            # A durable run that stops here (its replica closing, its lease lost) leaves the step in
            # flight to the run that resumes it, under the same request id: billed there, once.
            if self._checkpoint is not None and self._step_call is not None:
                abandon(self._step_call)
            raise
        finally:
            settle(self._step_call.tracker if self._step_call is not None else None)
            await self.box.close()
        if self._gone:
            await self._keep_cancelled()
        status, incomplete, error = journal.stop or ["completed", None, None]
        if self._failure is not None:
            status, incomplete = "failed", None
            error = {"code": self._failure.body.code or "server_error", "message": self._failure.body.message}
            yield self.conv.event("error", {"code": error["code"], "message": error["message"], "param": None})
        response = self.shell.render(status, self.output, journal.usage, error=error, incomplete=incomplete)
        terminal = self.conv.terminal(response)
        try:
            await self.keep(response, terminal)
        except ApiError as err:
            failed = self.conv.fail(err.body.message, err.body.code)
            response = self.shell.render("failed", self.output, journal.usage, error=self.conv.error)
            terminal = failed + self.conv.terminal(response)
        self.response = response
        yield terminal

    async def _keep_cancelled(self) -> None:
        """A foreground run its client left: once a tool call ran, the response is kept `cancelled` with what
        it did (each call with its result; no usage, as a cancelled background response), not appended to its
        conversation; before, nothing is kept, as for a plain turn. Either way nobody is answered (ClientGone)."""
        self.call.status = 499
        if self._acted():
            response = self.shell.render("cancelled", self.output, None)
            try:
                await self.keep(response, b"")
            except Exception:  # nobody to tell: the calls' audit events and usage rows stand
                log.exception("storing cancelled response %s failed", self.shell.id)
        raise ClientGone()

    async def _step(self, served: Served) -> AsyncIterator[bytes]:
        """Stream one model step; its items become the journal's `todo`."""
        journal = self.journal
        self.conv = conv = ResponsesStream(self.shell, seq=self.conv.next_seq, base=len(self.output))
        conv.mcp = self._kind
        async for piece in self._relay(served, conv):
            yield piece
        self._cut(False)  # the step is in: what follows (its audit, its calls) runs whole
        outcome = conv.outcome()
        self._add_usage(outcome.usage, served)
        kinds = {item["type"] for item in outcome.output}
        waits = "mcp_approval_request" in kinds or "function_call" in kinds  # the client answers those
        journal.todo = outcome.output
        if outcome.status != "completed":
            journal.stop = [outcome.status, outcome.incomplete, conv.error]
        elif waits or "mcp_call" not in kinds:
            journal.stop = ["completed", None, None]
        await self._audit("model_call", {"deployment": served.deployment.name, "items": sorted(kinds)})

    async def _relay(self, served: Served, conv: ResponsesStream) -> AsyncIterator[bytes]:
        relay = served.stream
        assert relay is not None
        step = self._step_call
        try:
            async for out in converted(relay, served.first, conv):
                yield out
            tail = conv.end()
            if tail:
                yield tail
        finally:
            relay.close()
        if step is not None and step.tracker is not None:
            if self._recorded is not None and await self._recorded(step.request_id.decode()):
                # The run before this one recorded the step, then died (or its store failed) before its
                # checkpoint: its row was kept, so the repeat is counted against the budgets once, as billed.
                abandon(step)
            else:
                step.tracker.finish_produced(served, 200, "stream_error" if conv.error else "ok")
                if self._mark is not None:  # (no await between: one settlement batch with the step's counts)
                    self._mark(step.request_id.decode())

    def _limit(self) -> str | None:
        """Why the next model step may not run (the response ends `incomplete`), or None."""
        journal, limits = self.journal, self.limits
        if journal.steps >= limits.max_steps:
            return "max_steps"
        if journal.calls >= limits.max_tool_calls:
            return "max_tool_calls"
        if time.time() - journal.started_at >= limits.max_run_s:
            return "max_run_time"
        if limits.max_spend is not None and Decimal(journal.spent) >= limits.max_spend:
            return "max_spend"
        return None

    def _kind(self, function: str) -> tuple[str, str, str] | None:
        if self.memory is not None and self.memory.claims(function):
            return "mcp_call", self.memory.label, function
        found = self.box.lookup(function)
        if found is not None:
            return ("mcp_approval_request" if found.needs_approval else "mcp_call"), found.label, found.tool.name
        # A tool of one of the run's servers that is not offered (left out by allowed_tools, or not listed):
        # a failed call the model reads and the audit trail records (_run_call), never run. It was handed to
        # the client as a function_call of a function it never declared.
        label = self.box.claimed(function)
        if label is None or function in self._own:
            return None
        tool = function[len(label) + len(SEPARATOR) :]
        offered = self.box.find(
            label, tool
        )  # an offered tool by its MCP name (`crm__a.b`, offered as `crm__a_b_<hash>`)
        if offered is not None:  # held to its approvals like any call of it
            return ("mcp_approval_request" if offered.needs_approval else "mcp_call"), label, tool
        return "mcp_call", label, tool

    async def _run_call(self, item: Item, approval_request_id: str | None = None) -> Item:
        """Run one MCP (or memory) call (the same idempotency key in every run of this response)."""
        found = self.box.find(item["server_label"], item["name"])
        self.journal.calls += 1
        key = f"{self.shell.id}/{self.journal.steps}/{item['id']}"
        done: Item
        if self.memory is not None and item["server_label"] == self.memory.label:
            done = await self.memory.call({**item, "approval_request_id": approval_request_id}, key)
        elif found is None:  # not offered (allowed_tools; or a resumed run's server no longer lists it): not run
            done = {**item, "approval_request_id": approval_request_id, "output": None, "status": "failed"}
            text = (
                f"Tool {item['name']} of MCP server {item['server_label']} is not offered to this response (the "
                "registration's or the request's allowed_tools, or the server's list): the call was not made."
            )
            done["error"] = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": text}]}
        else:
            done = await self.box.call(
                found, item["arguments"], item_id=item["id"], approval_request_id=approval_request_id, key=key
            )
        detail = {
            "server": item["server_label"],
            "tool": item["name"],
            "idempotency_key": key,
            "arguments_sha256": _sha(item["arguments"]),
            "result_sha256": _sha(done.get("output") or msgspec.json.encode(done.get("error")).decode()),
            "status": done["status"],
        }
        await self._audit("tool_call", detail)
        return done

    async def checkpoint(self) -> None:
        if self._checkpoint is None:
            return
        # The first step is admitted by `begin` before the items made until then are checkpointed: not
        # counted yet, or a run resumed from this checkpoint would make it again as the next step, under
        # another request id (billed twice, and counted against max_steps twice).
        admitted = self._served is not None
        self.journal.steps -= admitted
        try:
            kept = await self._checkpoint(self)
        finally:
            self.journal.steps += admitted
        if not kept:
            raise Stopped()

    async def _audit(self, action: str, detail: dict[str, Any]) -> None:
        """An `agent_step` event on the audit trail (on disk before the run goes on)."""
        accounting = self.pipeline.accounting
        audit = getattr(accounting, "audit", None) if accounting is not None else None
        principal = self.call.principal
        if audit is None or principal is None:
            return
        body = AgentStep(
            tenant=principal.tenant,
            subject=principal.subject,
            run_id=self.shell.id,
            step=self.journal.steps,
            action=action,
            detail=detail,
        )
        await audit.append("agent_step", body)

    def _ended(self, item: Item, index: int, *, announce: bool = False) -> bytes:
        """The events that finish an item the gateway made (a listing, a call that ran); `announce`:
        with its `output_item.added` and progress events (it was not streamed by a step)."""
        conv, kind, where = self.conv, item["type"], {"output_index": index, "item_id": item["id"]}
        out = []
        if announce:
            start = {**item, "tools": []} if kind == "mcp_list_tools" else {**item, "output": None, "error": None}
            if kind == "mcp_call":
                start["status"] = "in_progress"
            out.append(conv.event("response.output_item.added", {"output_index": index, "item": start}))
            out.append(conv.event(f"response.{kind}.in_progress", where))
            if kind == "mcp_call":
                out.append(conv.event("response.mcp_call_arguments.done", {**where, "arguments": item["arguments"]}))
        if kind == "mcp_call" or kind == "mcp_list_tools":
            state = "failed" if item.get("error") else "completed"
            out.append(conv.event(f"response.{kind}.{state}", where))
        out.append(conv.event("response.output_item.done", {"output_index": index, "item": item}))
        return b"".join(out)

    def _add_charge(self, deployment: str, usage: Usage) -> None:
        """A call the run made besides its model steps (a memory tool's routed embedding), at its price."""
        price = self.prices.get(deployment) if self.prices is not None else None
        if price is not None:  # an embedding asks for no service tier: the deployment's own price
            self.journal.spent = str(Decimal(self.journal.spent) + price.cost(usage))

    def _add_usage(self, usage: dict[str, Any], served: Served) -> None:
        journal = self.journal
        if self.prices is not None:
            used = Usage(usage["input_tokens"], usage["output_tokens"], usage["input_tokens_details"]["cached_tokens"])
            price = self.prices.get(served.deployment.name)
            if price is not None:  # at the asked tier's price, as the step is charged (metering/prices.py)
                cost = price.for_tier(self.req.service_tier).cost(used)
                journal.spent = str(Decimal(journal.spent) + cost)
        if journal.usage is None:
            journal.usage = usage
            return
        total = journal.usage
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            total[key] = total.get(key, 0) + usage.get(key, 0)
        total["input_tokens_details"]["cached_tokens"] += usage["input_tokens_details"]["cached_tokens"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
