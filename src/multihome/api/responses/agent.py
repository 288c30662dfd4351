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
`mcp_approval_response` (the approved call then runs first). The loop ends when the model answers
without calling an MCP tool, calls one of the client's own functions, asks for approval, or a limit
(`responses.agent.max_steps`, `max_tool_calls`) is reached (`incomplete`).

Upstream steps are always streamed (so the stream a client gets is live); a unary create drains the
same events. Before anything ran, a failure is the plain HTTP error a turn would give; after a tool
ran, the response is kept as `failed` with what was done, so no side effect is lost from the record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ...accounting.tracker import finish_failed, settle
from ...routing.attempts import Served
from ...schema.errors import ApiError, bad_request
from ...schema.responses import CreateResponse
from ...tools.toolbox import Toolbox
from ..asgi import Header
from ..openai.errors import upstream_client_error
from ..pipeline import Call, Pipeline, finish_refused
from .common import run_turn
from .items import Item, new_id
from .stream import ResponsesStream
from .translate import Shell, to_canonical

Keep = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Limits:
    max_steps: int
    max_tool_calls: int


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
    ) -> None:
        self.pipeline = pipeline
        self.call = call
        self.body = body
        self.req = req
        self.shell = shell
        self.context = context
        self.new = new
        self.box = toolbox
        self.keep = keep
        self.max_steps = limits.max_steps
        self.max_calls = min(limits.max_tool_calls, req.max_tool_calls or limits.max_tool_calls)
        self.output: list[Item] = []
        self.usage: dict[str, Any] | None = None
        self.headers: list[Header] = []
        self.steps = 0
        self.calls = 0
        self.conv = ResponsesStream(shell)  # the current step's converter: it numbers every event
        self._ran: list[Item] = []  # items made before the first step (approved calls, listings): their events
        self._served: Served | None = None  # the step admitted and waiting to be streamed
        self._step_call: Call | None = None
        self._failure: ApiError | None = None
        self.response: dict[str, Any] | None = None

    # -- before the first byte ---------------------------------------------------------------------
    async def begin(self) -> None:
        """Everything up to the first model step's answer. An ApiError here, before any tool ran, is
        the client's plain HTTP error; after one ran, the response will be `failed` with it."""
        approvals = self._approvals()  # checked before anything runs: a bad answer is a 400
        try:
            listed = await self.box.prepare([*self.context, *self.new], new_id)
            for request, answer in approvals:
                await self._approved(request, answer)
            self.output += listed
            self._ran += listed
            self._served = await self._model()
        except ApiError as err:
            if not self.output:
                raise
            self._failure = err

    def _approvals(self) -> list[tuple[Item, Item]]:
        """The approved requests this input answers, each with its answer."""
        asked = {i["id"]: i for i in [*self.context, *self.new] if i.get("type") == "mcp_approval_request"}
        ran = {i.get("approval_request_id") for i in self.context if i.get("type") == "mcp_call"}
        out = []
        for n, item in enumerate(self.new):
            if item.get("type") != "mcp_approval_response":
                continue
            request = asked.get(item["approval_request_id"])
            if request is None:
                raise bad_request(
                    f"input[{n}] answers approval request '{item['approval_request_id'][:80]}', which is not in this "
                    "response's context: continue the response that asked (previous_response_id or conversation).",
                    param=f"input[{n}].approval_request_id",
                )
            if self.box.label(request["server_label"]) is None:
                raise bad_request(
                    f"input[{n}] approves a call to MCP server '{request['server_label']}', which is not among this "
                    "request's tools: send the mcp tool with that server_label again.",
                    param="tools",
                )
            if item["approve"] and request["id"] not in ran:
                out.append((request, item))
        return out

    async def _approved(self, request: Item, answer: Item) -> None:
        found = self.box.find(request["server_label"], request["name"])
        if found is None:
            raise bad_request(
                f"Tool '{request['name']}' of MCP server '{request['server_label']}' is no longer offered to this "
                "request (allowed_tools, or the server's list).",
                param="tools",
            )
        item = await self.box.call(
            found, request["arguments"], item_id=new_id("mcp"), approval_request_id=request["id"]
        )
        self.calls += 1
        self.output.append(item)
        self._ran.append(item)

    async def _model(self) -> Served:
        """The next model step, admitted and answering (its stream not read yet)."""
        self.steps += 1
        req = self.req
        if self.steps > 1 and req.tool_choice == "required":  # one call was made: the model may now answer
            req = msgspec.structs.replace(req, tool_choice="auto")
        req = msgspec.structs.replace(req, stream=True)
        canonical, dropped = to_canonical(req, self.context, [*self.new, *self.output], self.box.functions())
        step = Call(self.call.scope, self.call.request_id + f"-{self.steps}".encode())
        step.principal = self.call.principal
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

    # -- the stream ----------------------------------------------------------------------------------
    async def result(self) -> dict[str, Any]:
        async for _ in self.events():
            pass
        assert self.response is not None
        return self.response

    async def events(self) -> AsyncIterator[bytes]:
        """The response's events, from response.created to its terminal event (sent once it is kept)."""
        conv = self.conv
        yield conv.start()
        for n, item in enumerate(self._ran):
            yield self._ended(item, n, announce=True)
        status, incomplete, error = "completed", None, None
        try:
            while self._failure is None:
                served = self._served
                if served is None:
                    if self.steps >= self.max_steps:
                        status, incomplete = "incomplete", "max_steps"
                        break
                    if self.calls >= self.max_calls:
                        status, incomplete = "incomplete", "max_tool_calls"
                        break
                    try:
                        served = await self._model()
                    except ApiError as err:
                        self._failure = err
                        break
                self._served = None
                self.conv = conv = ResponsesStream(self.shell, seq=self.conv.next_seq, base=len(self.output))
                conv.mcp = self._kind
                async for piece in self._relay(served, conv):
                    yield piece
                outcome = conv.outcome()
                self._add_usage(outcome.usage)
                go_on = outcome.status == "completed"
                made_call = False
                for item in outcome.output:
                    kind = item["type"]
                    if kind == "mcp_call":
                        item = await self._run_call(item)
                        made_call = True
                        yield self._ended(item, len(self.output))
                    elif kind in ("mcp_approval_request", "function_call"):
                        go_on = False  # the client answers: an approval, or its own function's output
                    self.output.append(item)
                if outcome.status != "completed":
                    status, incomplete = outcome.status, outcome.incomplete
                    error = conv.error
                if not (go_on and made_call):
                    break
        finally:
            settle(self._step_call.tracker if self._step_call is not None else None)
        if self._failure is not None:
            status, incomplete = "failed", None
            error = {"code": self._failure.body.code or "server_error", "message": self._failure.body.message}
            yield self.conv.event("error", {"code": error["code"], "message": error["message"], "param": None})
        response = self.shell.render(status, self.output, self.usage, error=error, incomplete=incomplete)
        try:
            await self.keep(response)
        except ApiError as err:
            yield self.conv.fail(err.body.message, err.body.code)
            response = self.shell.render("failed", self.output, self.usage, error=self.conv.error)
        self.response = response
        yield self.conv.terminal(response)

    async def _relay(self, served: Served, conv: ResponsesStream) -> AsyncIterator[bytes]:
        relay = served.stream
        assert relay is not None
        step = self._step_call
        try:
            out = conv.feed(served.first)
            if out:
                yield out
            if not conv.finished:
                async for piece in relay.rest():
                    out = conv.feed(piece)
                    if out:
                        yield out
                    if conv.finished:
                        break
            tail = conv.end()
            if tail:
                yield tail
        finally:
            relay.close()
        if step is not None and step.tracker is not None:
            step.tracker.finish_produced(served, 200, "stream_error" if conv.error else "ok")

    def _kind(self, function: str) -> tuple[str, str, str] | None:
        found = self.box.lookup(function)
        if found is None:
            return None
        return ("mcp_approval_request" if found.needs_approval else "mcp_call"), found.label, found.tool.name

    async def _run_call(self, item: Item) -> Item:
        found = self.box.find(item["server_label"], item["name"])
        assert found is not None  # the converter named it from the toolbox
        self.calls += 1
        return await self.box.call(found, item["arguments"], item_id=item["id"])

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

    def _add_usage(self, usage: dict[str, Any]) -> None:
        if self.usage is None:
            self.usage = usage
            return
        total = self.usage
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            total[key] = total.get(key, 0) + usage.get(key, 0)
        total["input_tokens_details"]["cached_tokens"] += usage["input_tokens_details"]["cached_tokens"]
