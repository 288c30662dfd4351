"""`StepContext`: an agent run's chat request for each model step, built incrementally (api/responses/agent.py).

A run's context only grows: each step adds the last model answer's items and the results of its tool
calls. Converting the whole context into a chat request again at every step (items to messages, the
body encoded, parsed and validated back) made a step's cost grow with the run (~0.015 ms a step, so
~1 ms a step near 50 steps). Here each item is converted once per run: the messages made so far are
kept with their encoded bytes and typed form, and a step converts, encodes and validates only what
was added since the last one (and the message before it, which a function call may extend). The raw
`messages` field is the kept encodings joined, byte for byte what encoding the whole list gives.

What is kept is the canonical (OpenAI chat) request, which no provider kind shapes: a step routed to
another kind of provider than the last (Azure declines, Bedrock serves) is translated from it by its
own adapter like any other call, so nothing here depends on which deployment served a step.

A step is rebuilt whole (exactly as `to_canonical` builds it) when the items added might merge with
the messages before them (a reasoning summary still waiting for the answer it opens), and on the first
step. A bad request is the same 400 either way: an incremental step that fails validation is built
again whole, which raises the error with the positions of the whole request.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...schema.chat import ParsedChat
from ...schema.errors import ApiError, bad_request
from ...schema.responses import CreateResponse
from .items import Item, chat_messages
from .thinking import Thinking
from .translate import chat_body, long_name, parsed_body, turn_messages

_encode = msgspec.json.encode
# Item kinds after which no reasoning summary is waiting to merge into the next assistant message
# (items.chat_messages: these reset it; a function call or a tool listing does not).
_SETTLED = frozenset({"message", "function_call_output", "mcp_call", "mcp_approval_request", "mcp_approval_response"})


class StepContext:
    """`req`: the response's request as every step sends it (streamed); `functions`: the tools the
    gateway runs (MCP servers', memory's), offered to the model as functions; `thinking`: the response's
    opened thinking blobs (translate.open_thinking), whose blocks go back to Claude."""

    def __init__(
        self,
        req: CreateResponse,
        context: list[Item],
        new: list[Item],
        functions: list[Item],
        thinking: Thinking | None = None,
    ) -> None:
        self._req = req
        self._thinking = thinking
        self._context = context
        self._new = new
        self._functions = functions
        self._messages: list[Item] = []
        self._asked: dict[str, Item] = {}
        self._encoded: list[bytes] = []  # each message's JSON, as encoding the whole list writes it
        self._typed: list[Any] = []  # each message as the parsed request holds it
        self._done = -1  # output items converted so far (-1: nothing built yet)
        self._pending = False  # a reasoning summary may merge with the next item's message
        self._vision = False  # some message has an image part (a capability every step needs)

    def request(self, output: list[Item], *, tool_choice_auto: bool = False) -> tuple[ParsedChat, list[str]]:
        """The chat request for the next step: the context, the new input, then `output` (the run's items
        so far; only ever appended to). `tool_choice_auto`: a `required` tool choice is `auto` from now on."""
        req = self._req
        if tool_choice_auto and req.tool_choice == "required":
            req = msgspec.structs.replace(req, tool_choice="auto")
        if self._done < 0 or self._pending or len(output) < self._done:
            return self._whole(req, output)
        try:
            return self._added(req, output)
        except ApiError:
            return self._whole(req, output)  # the same error, with the positions of the whole request

    def _whole(self, req: CreateResponse, output: list[Item]) -> tuple[ParsedChat, list[str]]:
        self._asked = {}
        added = [*self._new, *output]
        self._messages = turn_messages(req, self._context, added, self._asked, self._thinking)
        self._done = -1
        if not self._messages:
            raise bad_request("The request has nothing to answer: 'input' is empty.", param="input")
        body, dropped = chat_body(req, self._messages, self._functions)
        parsed = parsed_body(req, body)
        self._encoded = [_encode(m) for m in self._messages]
        self._typed = list(parsed.request.messages)
        self._vision = "vision" in parsed.needs
        self._settle(added)
        self._done = len(output)
        return parsed, dropped

    def _added(self, req: CreateResponse, output: list[Item]) -> tuple[ParsedChat, list[str]]:
        items = output[self._done :]
        messages = self._messages
        start = max(0, len(messages) - 1)  # the last message may take the first added call (one assistant turn)
        chat_messages(items, messages, self._asked, self._thinking)
        changed = messages[start:]
        body, dropped = chat_body(req, changed, self._functions)
        part = parsed_body(req, body)  # the changed messages validated and typed, and the request's other fields
        self._encoded[start:] = [_encode(m) for m in changed]
        self._typed[start:] = part.request.messages
        self._vision = self._vision or "vision" in part.needs
        self._settle(items)
        self._done = len(output)
        raw = dict(part.raw)
        raw["messages"] = msgspec.Raw(b"[" + b",".join(self._encoded) + b"]")
        needs = part.needs | {"vision"} if self._vision else part.needs
        typed = msgspec.structs.replace(part.request, messages=list(self._typed))
        parsed = ParsedChat(request=typed, raw=raw, needs=needs, reasoning_summary=part.reasoning_summary)
        parsed.long_name = long_name(req, typed)
        return parsed, dropped

    def _settle(self, items: list[Item]) -> None:
        for item in items:
            kind = item.get("type")
            if kind == "reasoning":
                self._pending = True
            elif kind in _SETTLED:
                self._pending = False
