"""OpenAI chat-completion chunks (as the relay forwards them) -> Responses API stream events.

Event order, as the official SDK accumulates it (reference/responses.md section 7): response.created
and response.in_progress at once; per output item output_item.added, then for a message
content_part.added, output_text.delta... (refusal.delta...), output_text.done, content_part.done,
and for a function call function_call_arguments.delta..., function_call_arguments.done; then
output_item.done. A message or reasoning item is done before the next item is added (as OpenAI streams
them: a Claude answer's sentence is done before its tool call begins); function calls, in output order,
when the upstream finishes (an agent step's MCP items stay open: the agent ends each once it has run);
last exactly one of
response.completed, response.incomplete or response.failed (after an `error` event). Every event
carries `sequence_number`, from 0, one more per event.

The terminal event is held back until the caller has stored the response (`ResponsesRelay`), so a
client that has seen response.completed can retrieve or continue it at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ...providers.sse import DONE, SseSplitter
from ...schema.chunks import Chunk, Failure, FnDelta, ToolDelta, read_chunk
from ...schema.peek import Usage
from ...state.background import Event
from .items import Item, new_id
from .thinking import Thinking
from .translate import (
    INCOMPLETE,
    Outcome,
    Shell,
    function_call_item,
    message_item,
    output_text,
    reasoning_item,
    usage_of,
)

_encode = msgspec.json.encode


@dataclass(slots=True)
class _Part:
    kind: str  # "output_text" | "refusal"
    text: str = ""


@dataclass(slots=True)
class _Open:
    """An output item being streamed."""

    index: int
    id: str
    kind: str  # "message" | "function_call" | "reasoning" | "mcp_call" | "mcp_approval_request" (an agent step's)
    parts: list[_Part] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    label: str = ""  # an MCP call's server_label, and the tool's own name (`name` is the function's)
    tool: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)  # a reasoning item's signed thinking blocks
    sealed: str | None = None  # those blocks sealed (once: every rendering of the item shows the same blob)
    done: bool = False  # its done events are sent: more text or reasoning starts an item of its own

    def item(self, status: str, thinking: Thinking | None = None) -> Item:
        if self.kind == "function_call":
            return function_call_item(self.id, self.call_id, self.name, self.arguments, status)
        if self.kind == "message":
            return message_item(self.id, [_part_dict(p) for p in self.parts], status)
        if self.kind == "reasoning":
            if self.blocks and self.sealed is None and thinking is not None and status != "in_progress":
                self.sealed = thinking.carry(self.blocks)
            return reasoning_item(self.id, self.arguments if status != "in_progress" else None, self.sealed)
        out: Item = {"type": self.kind, "id": self.id, "server_label": self.label, "name": self.tool}
        out["arguments"] = self.arguments
        if self.kind == "mcp_call":
            out.update(approval_request_id=None, output=None, error=None, status="in_progress")
        return out


# What an MCP function name stands for (an agent step): (kind, server_label, tool), or None for a plain function.
McpKinds = Callable[[str], "tuple[str, str, str] | None"]
_ARGS_DELTA = {
    "function_call": "response.function_call_arguments.delta",
    "mcp_call": "response.mcp_call_arguments.delta",
}


def _part_dict(part: _Part) -> Item:
    return output_text(part.text) if part.kind == "output_text" else {"type": "refusal", "refusal": part.text}


class ResponsesStream:
    """Feed the relay's SSE bytes; get Responses SSE bytes. One instance per response."""

    def __init__(self, shell: Shell, *, seq: int = 0, base: int = 0) -> None:
        self.shell = shell
        self._split = SseSplitter()
        self._seq = seq  # a background run resumed after a crash continues its stream's numbering
        self._base = base  # and puts its items after those the dead run had begun
        self._items: list[_Open] = []
        self._message: _Open | None = None
        self._reasoning: _Open | None = None  # its summary text is kept in `arguments`
        self._tools: dict[int, _Open] = {}  # the chunk's tool-call index -> its item
        self._finish: str | None = None
        self._closed = False  # every item done (the upstream finished)
        self._usage: Usage | None = None
        self.error: dict[str, Any] | None = None  # set when the stream failed
        self.finished = False  # the upstream stream is over ([DONE] or an error): only the terminal event is left
        self.mcp: McpKinds | None = None  # set for an agent step: which functions are MCP tools

    @property
    def next_seq(self) -> int:
        return self._seq

    def event(self, kind: str, payload: dict[str, Any]) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **payload}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encode(payload) + b"\n\n"

    def start(self) -> bytes:
        snapshot = self.shell.render("in_progress", [])
        return self.event("response.created", {"response": snapshot}) + self.event(
            "response.in_progress", {"response": snapshot}
        )

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for payload in self._split.feed(data):
            if self.finished:
                break
            if payload == DONE:
                self._close(out)
                self.finished = True
                continue
            chunk = read_chunk(payload)
            if isinstance(chunk, Failure):
                out.append(self.fail(chunk.message, chunk.code))
                continue
            self._chunk(chunk, out)
        return b"".join(out)

    def fail(self, message: str, code: str | None = None) -> bytes:
        """An `error` event; the terminal event (`terminal`) is then response.failed."""
        self.finished = True
        self.error = {"code": "server_error", "message": message}
        return self.event("error", {"code": code or "server_error", "message": message, "param": None})

    def end(self) -> bytes:
        """The relay stopped. A stream that never finished must not look complete to the client."""
        if self.finished:
            return b""
        return self.fail("The stream ended before it was complete; the answer is incomplete. Retry the request.")

    def outcome(self) -> Outcome:
        """What the response came to (once `finished`): stored, then sent as the terminal event."""
        incomplete = INCOMPLETE.get(self._finish or "")
        if self.error is not None:
            status = "failed"
        else:
            status = "incomplete" if incomplete else "completed"
        item_status = "completed" if status == "completed" else "incomplete"
        thinking = self.shell.thinking
        output = [o.item(item_status if self._closed or o.done else "in_progress", thinking) for o in self._items]
        return Outcome(status, output, usage_of(self._usage), incomplete if status == "incomplete" else None)

    def response(self) -> dict[str, Any]:
        """The final Response object (once `finished`): what is stored, then sent as the terminal event."""
        outcome = self.outcome()
        usage = None if outcome.status == "failed" and self._usage is None else outcome.usage
        error = self.error if outcome.status == "failed" else None
        return self.shell.render(outcome.status, outcome.output, usage, error=error, incomplete=outcome.incomplete)

    def terminal(self, response: dict[str, Any]) -> bytes:
        return self.event(f"response.{response['status']}", {"response": response})

    # -- building items ------------------------------------------------------------------------------
    def _chunk(self, chunk: Chunk, out: list[bytes]) -> None:
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.service_tier is not None:  # the tier actually used, which the Response reports (Shell.tier)
            self.shell.tier = chunk.service_tier
        for choice in chunk.choices[:1]:  # the door never asks for n > 1
            delta = choice.delta
            if delta is not None:
                if delta.reasoning_content:
                    self._thought(delta.reasoning_content, out)
                for block in delta.thinking_blocks or ():  # a finished block, signature included
                    self._reasoning_item(out).blocks.append(
                        {k: v for k, v in msgspec.structs.asdict(block).items() if v is not None}
                    )
                if delta.content:
                    self._text("output_text", delta.content, out)
                if delta.refusal:
                    self._text("refusal", delta.refusal, out)
                for call in delta.tool_calls or ():
                    self._tool(call, out)
            if choice.finish_reason:
                self._finish = choice.finish_reason
                self._close(out)

    def _reasoning_item(self, out: list[bytes]) -> _Open:
        item = self._reasoning
        if item is None or item.done:
            item = self._reasoning = self._add(_Open(self._base + len(self._items), new_id("rs"), "reasoning"), out)
            out.append(
                self.event(
                    "response.reasoning_summary_part.added",
                    {**_summary_at(item), "part": {"type": "summary_text", "text": ""}},
                )
            )
        return item

    def _thought(self, text: str, out: list[bytes]) -> None:
        """Reasoning text (Claude's thinking, Gemini's thoughts) as a reasoning item's summary text."""
        item = self._reasoning_item(out)
        item.arguments += text
        out.append(self.event("response.reasoning_summary_text.delta", {**_summary_at(item), "delta": text}))

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        msg = self._message
        if msg is None or msg.done:
            msg = self._message = self._add(_Open(self._base + len(self._items), new_id("msg"), "message"), out)
        if not msg.parts or msg.parts[-1].kind != kind:
            msg.parts.append(_Part(kind))
            out.append(
                self.event(
                    "response.content_part.added",
                    {
                        "item_id": msg.id,
                        "output_index": msg.index,
                        "content_index": len(msg.parts) - 1,
                        "part": _part_dict(_Part(kind)),
                    },
                )
            )
        part = msg.parts[-1]
        part.text += text
        where = {"item_id": msg.id, "output_index": msg.index, "content_index": len(msg.parts) - 1, "delta": text}
        if kind == "output_text":
            out.append(self.event("response.output_text.delta", {**where, "logprobs": []}))
        else:
            out.append(self.event("response.refusal.delta", where))

    def _tool(self, call: ToolDelta, out: list[bytes]) -> None:
        fn = call.function or FnDelta()
        item = self._tools.get(call.index)
        if item is None:
            item = _Open(
                self._base + len(self._items), new_id("fc"), "function_call", call_id=call.id or new_id("call")
            )
            item.name = fn.name or ""
            if self.mcp is not None:
                found = self.mcp(item.name)
                if found is not None:
                    item.kind, item.label, item.tool = found
                    item.id = new_id("mcp" if item.kind == "mcp_call" else "mcpr")
            self._tools[call.index] = self._add(item, out)
        elif fn.name and not item.name:
            item.name = fn.name
        if fn.arguments:
            item.arguments += fn.arguments
            delta = _ARGS_DELTA.get(item.kind)
            if delta is not None:  # an approval request has no argument events
                out.append(self.event(delta, {"item_id": item.id, "output_index": item.index, "delta": fn.arguments}))

    def _add(self, item: _Open, out: list[bytes]) -> _Open:
        for before in self._items:  # the items before it are done first, as OpenAI streams them
            if not before.done and before.kind in _ENDED_BY_NEXT:
                self._end_item(before, "completed", out)
        self._items.append(item)
        out.append(
            self.event("response.output_item.added", {"output_index": item.index, "item": item.item("in_progress")})
        )
        if item.kind == "mcp_call":
            out.append(self.event("response.mcp_call.in_progress", {"output_index": item.index, "item_id": item.id}))
        return item

    def _close(self, out: list[bytes]) -> None:
        if self._closed:
            return
        self._closed = True
        status = "incomplete" if INCOMPLETE.get(self._finish or "") else "completed"
        for item in self._items:
            if not item.done:
                self._end_item(item, status, out)

    def _end_item(self, item: _Open, status: str, out: list[bytes]) -> None:
        """An item's done events (`status`: the message's or reasoning's, when the answer was cut)."""
        item.done = True
        if item.kind == "message":
            for i, part in enumerate(item.parts):
                where = {"item_id": item.id, "output_index": item.index, "content_index": i}
                if part.kind == "output_text":
                    out.append(self.event("response.output_text.done", {**where, "text": part.text, "logprobs": []}))
                else:
                    out.append(self.event("response.refusal.done", {**where, "refusal": part.text}))
                out.append(self.event("response.content_part.done", {**where, "part": _part_dict(part)}))
        elif item.kind == "function_call":
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    {"item_id": item.id, "output_index": item.index, "name": item.name, "arguments": item.arguments},
                )
            )
        elif item.kind == "reasoning":
            out.append(
                self.event("response.reasoning_summary_text.done", {**_summary_at(item), "text": item.arguments})
            )
            summary = {"type": "summary_text", "text": item.arguments}
            out.append(self.event("response.reasoning_summary_part.done", {**_summary_at(item), "part": summary}))
        elif item.kind == "mcp_call":  # it has not run yet: the agent ends the item once it has
            where = {"item_id": item.id, "output_index": item.index, "arguments": item.arguments}
            out.append(self.event("response.mcp_call_arguments.done", where))
            return
        done = item.item("completed" if item.kind == "function_call" else status, self.shell.thinking)
        out.append(self.event("response.output_item.done", {"output_index": item.index, "item": done}))


# The items a next item ends: text or reasoning, which nothing adds to once something else has begun (more
# starts an item of its own). Not function calls: a chunk may begin two parallel calls and go on with the
# first one's arguments, so they end when the upstream does; nor an agent step's MCP items, which the agent
# ends once it has run them or asked for approval.
_ENDED_BY_NEXT = frozenset({"message", "reasoning"})


def _summary_at(item: _Open) -> dict[str, Any]:
    return {"item_id": item.id, "output_index": item.index, "summary_index": 0}


async def converted(relay: Any, first: bytes, conv: ResponsesStream) -> AsyncIterator[bytes]:
    """The relay's stream (its `first` bytes, then the rest) as Responses events, until the upstream
    finished; the caller then ends it (`conv.end()`, the terminal event)."""
    out = conv.feed(first)
    if out:
        yield out
    if not conv.finished:
        async for piece in relay.rest():
            out = conv.feed(piece)
            if out:
                yield out
            if conv.finished:
                break


# Stores the final Response object; returns b"" or, when it could not, the stream's error event (`fail`).
Store = Callable[[dict[str, Any]], Awaitable[bytes]]


class ResponsesRelay:
    """Wraps a StreamRelay so the stream sender forwards Responses events instead, and holds the
    terminal event back until `store` has made the response durable.

    Same `rest()`/`close()`/`cut()` surface as the relay, so the disconnect watcher, upstream
    cancellation and graceful stop of the chat door are reused unchanged. The relay's first bytes
    are fed here too (the stream sender is given `start()` as the first bytes instead).
    """

    def __init__(self, relay: Any, first: bytes, converter: ResponsesStream, store: Store) -> None:
        self._relay = relay
        self._first = first
        self._converter = converter
        self._store = store

    async def rest(self) -> AsyncIterator[bytes]:
        conv = self._converter
        async for out in converted(self._relay, self._first, conv):
            yield out
        tail = conv.end()
        response = conv.response()
        failed = await self._store(response)
        if failed:
            response = conv.response()  # now status failed, with the error
        yield tail + failed + conv.terminal(response)

    def close(self) -> None:
        self._relay.close()

    def __getattr__(self, name: str) -> Any:
        # usage, finish_reasons, events, error, cut...: whoever meters or stops the stream reads the real relay.
        return getattr(self._relay, name)


def split_events(data: bytes, converter: ResponsesStream) -> list[Event]:
    """The converter's output (whole SSE events, each ending in a blank line; the JSON is one line)
    as (sequence_number, bytes) pairs: the last of them has the converter's last number."""
    if not data:
        return []
    parts = [p + b"\n\n" for p in data.split(b"\n\n") if p]
    end = converter.next_seq
    return [(end - len(parts) + i, p) for i, p in enumerate(parts)]
