"""A turn sent natively to an upstream that speaks the Responses API (OpenAI, Azure), and its answer read back.

The request is the client's own, untranslated, with the context the gateway rebuilt from its store
as `input` and `store: false` (the upstream keeps nothing; the gateway stores the turn). What only
the gateway understands (`previous_response_id`, `conversation`, `background`, the `multihome`
extension) is not sent. When the call asks for reasoning, `include` gains
`reasoning.encrypted_content`, so the reasoning items come back carrying what the next native turn
needs, and their plain `summary` beside it for a turn that another provider serves.

The answer is a Response object (or its event stream), whose output items, usage and status become
the gateway's stored response as they are; only the envelope (id, model, store, the chain) is the
gateway's own (`Shell`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...schema.errors import ApiError
from ...schema.responses import CreateResponse
from .items import Item, mcp_pair
from .stream import ResponsesStream
from .thinking import is_ours
from .translate import Outcome, Shell

_encode = msgspec.json.encode
_raw = msgspec.json.Decoder(dict[str, msgspec.Raw])
_any = msgspec.json.Decoder(dict[str, Any])
_NOT_SENT = ("previous_response_id", "conversation", "background", "multihome", "store", "input", "include")
_FALSE = msgspec.Raw(b"false")
_ENCRYPTED = "reasoning.encrypted_content"


class NativeTurn:
    """The body of one turn for a native upstream, built on first use and shared by every native attempt."""

    def __init__(self, body: bytes, req: CreateResponse, context: list[Item], new: list[Item]) -> None:
        self._body = body
        self._req = req
        self._items = [*context, *new]
        self._raw: dict[str, msgspec.Raw] | None = None

    def raw(self) -> dict[str, msgspec.Raw]:
        if self._raw is None:
            raw = {k: v for k, v in _raw.decode(self._body).items() if k not in _NOT_SENT}
            raw["input"] = msgspec.Raw(_encode(upstream_items(self._items)))
            raw["store"] = _FALSE
            include = list(self._req.include or ())
            wants_reasoning = self._req.reasoning is not None or any(i.get("type") == "reasoning" for i in self._items)
            if wants_reasoning and _ENCRYPTED not in include:
                include.append(_ENCRYPTED)
            if include:
                raw["include"] = msgspec.Raw(_encode(include))
            self._raw = raw
        return self._raw


_MCP = frozenset({"mcp_list_tools", "mcp_call", "mcp_approval_request", "mcp_approval_response"})


def upstream_items(items: list[Item]) -> list[Item]:
    """The stored items as a stateless upstream takes them: without the ids the gateway (or another
    provider) gave them, which the upstream would look up and not find; a reasoning item only with its
    encrypted content (the one form a stateless upstream accepts back), else its summary is all there is,
    and a chat-served turn never needed more. MCP items are the gateway's own (it ran the calls): a
    stateless upstream is sent them as the function calls and outputs a chat upstream is sent."""
    out: list[Item] = []
    asked: dict[str, Item] = {}
    for item in items:
        kind = item.get("type")
        if kind == "reasoning":
            # The upstream's own encrypted reasoning goes back; the gateway's (Claude's blocks) never does.
            if item.get("encrypted_content") and not is_ours(item["encrypted_content"]):
                out.append(item)
            continue
        if kind in _MCP:
            pair = mcp_pair(item, kind, asked)
            if pair is not None:
                name, call_id, arguments, output = pair
                out.append({"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments})
                out.append({"type": "function_call_output", "call_id": call_id, "output": output})
            continue
        out.append({k: v for k, v in item.items() if k != "id"})
    return out


class _Response(msgspec.Struct):
    status: str = "completed"
    output: list[dict[str, Any]] = []
    usage: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


_response = msgspec.json.Decoder(_Response)


def outcome_of(found: _Response) -> Outcome:
    incomplete = (found.incomplete_details or {}).get("reason") if found.status == "incomplete" else None
    status = found.status if found.status in ("completed", "incomplete", "failed") else "failed"
    error = found.error if status == "failed" else None
    if status == "failed" and error is None:
        error = {"code": "server_error", "message": f"The upstream response ended with status '{found.status}'."}
    return Outcome(status, found.output, found.usage or {}, incomplete, error)


def from_response(body: bytes, deployment: str) -> Outcome:
    """A native Response object's output, usage and status (a 502 if unreadable)."""
    try:
        return outcome_of(_response.decode(body))
    except msgspec.DecodeError:
        raise ApiError(
            502,
            f"Deployment '{deployment}' answered with a body the gateway could not read as a Response.",
            type="server_error",
            code="upstream_malformed",
        ) from None


class NativeStream(ResponsesStream):
    """The relay's native Responses events (providers/responses_wire.py) -> the client's: the same events,
    renumbered after the gateway's own `response.created` / `response.in_progress`; the terminal event
    is read into the response that is stored, then rendered by the gateway (`terminal`)."""

    def __init__(self, shell: Shell) -> None:
        super().__init__(shell)
        self._done_items: dict[int, Item] = {}
        self._final: Outcome | None = None

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for payload in self._split.feed(data):
            if self.finished:
                break
            if payload == b"[DONE]":
                if self._final is None:
                    out.append(self.fail("The upstream stream ended without a final event; the answer is incomplete."))
                self.finished = True
                continue
            event = _any.decode(payload)
            kind = event.pop("type", "")
            if kind in ("response.completed", "response.incomplete", "response.failed"):
                self._final = outcome_of(msgspec.convert(event.get("response") or {}, _Response))
                if self._final.status == "failed":
                    self.error = self._final.error
                self.finished = True
                continue
            if "error" in event:
                err = event["error"] if isinstance(event["error"], dict) else {}
                out.append(self.fail(str(err.get("message") or "The upstream stream failed."), err.get("code")))
                continue
            event.pop("sequence_number", None)
            if kind == "response.output_item.done" and isinstance(event.get("output_index"), int):
                self._done_items[event["output_index"]] = event.get("item") or {}
            out.append(self.event(kind, event))
        return b"".join(out)

    def outcome(self) -> Outcome:
        final = self._final
        if self.error is None and final is not None:
            return final
        # Failed: upstream said so, the stream broke, or the response could not be stored (`fail`).
        output = final.output if final is not None else [self._done_items[i] for i in sorted(self._done_items)]
        return Outcome("failed", output, final.usage if final is not None else {}, None, self.error)

    def response(self) -> dict[str, Any]:
        o = self.outcome()
        return self.shell.render(o.status, o.output, o.usage or None, error=o.error, incomplete=o.incomplete)
