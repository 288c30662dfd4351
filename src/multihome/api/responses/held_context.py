"""`HeldContexts`: a stored chain's context, converted to chat messages once per conversation, not once per turn.

A turn that continues a chain (`previous_response_id`) sends the whole context again as a chat request.
Converting it every turn (items to messages, the body encoded, then parsed and validated back:
`translate.to_canonical`) cost ~0.1 ms at 20 turns and grows with the conversation. Here the converted
context is kept by the id of the chain's newest turn: the next turn reuses it, or extends the one of the
turn before with that turn's own input and output, and converts, encodes and validates only those and its
new input. The raw `messages` field is the kept encodings joined: byte for byte what `to_canonical` sends
(a unit test checks it over random conversations), so every deployment is sent the same request.

Only plain conversations are held: messages, function calls and their outputs. A context with reasoning
items (a summary may merge into the answer after it, Claude's thinking blocks depend on the turn's keys) or
MCP items (an approval answers a request turns earlier) is converted whole, as before, and so is a chunk
that starts with a function call (it would extend the message before it). Whatever does not validate is
converted whole too, so a bad request gets the same 400, with the positions of the whole request.

A kept context is used only for the very chain it was made from (the ids of every turn, as the store read
them for this tenant): a turn deleted since, or another tenant's chain, never matches. It holds plaintext
in the gateway's memory, as `state.cache.OpenedResponses` does, bounded by bytes (the typed messages
counted too), one per conversation (the longest); a delete through this replica drops every context that
holds the deleted turn, a chain that no longer matches is dropped when next asked for, the rest (turns
deleted on another replica or by the retention sweep) ages out.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgspec

from ...schema.chat import ParsedChat
from ...schema.errors import ApiError
from ...schema.responses import CreateResponse
from ...state import StoredResponse
from .items import Item, chat_messages
from .thinking import Thinking
from .translate import chat_body, long_name, parsed_body

_encode = msgspec.json.encode
# Item kinds whose messages do not depend on items of other turns (items.chat_messages), except a function
# call that opens a chunk (it joins the assistant message before it).
_PLAIN = frozenset({"message", "function_call", "function_call_output"})
_sizeof = sys.getsizeof
_ENTRY = 400  # bytes a kept context costs beyond its messages and ids, about (the Held, its lists, the index)


@dataclass(slots=True)
class Held:
    """A chain's context as chat messages: each one's JSON and typed form, and whether any has an image."""

    ids: tuple[str, ...]  # the chain it was converted from, oldest first
    encoded: list[bytes]
    typed: list[Any]
    vision: bool
    size: int


_EMPTY = Held((), [], [], False, 0)


def _plain(items: list[Item], first: bool) -> bool:
    """Whether `items` convert the same alone as after the items before them (`first`: nothing before)."""
    if not first and items and items[0].get("type") == "function_call":
        return False
    return all(item.get("type") in _PLAIN for item in items)


def _cost(encoded: bytes) -> int:
    """Bytes a kept message costs, about: its encoding, and its typed form (parsed apart, nothing shared:
    about the same text again, and a struct or string object for every JSON string, about 24 bytes per
    quote), and its list slots. The typed form is most of it: counting the encoding alone let the memory
    held reach ~6x the bound. Estimated from the encoding (a C count), not walked: ~1 us a message less."""
    return _sizeof(encoded) + len(encoded) + 24 * encoded.count(b'"') + 64


def _images(messages: list[Any]) -> bool:
    """Whether a message has an image part (the `vision` need, as schema.chat's `_needs` reads it)."""
    return any(isinstance(m.content, list) and any(p.type == "image_url" for p in m.content) for m in messages)


class HeldContexts:
    def __init__(self, max_bytes: int = 16 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Held] = OrderedDict()
        self._bytes = 0

    def request(
        self,
        req: CreateResponse,
        chain: list[StoredResponse],
        new: list[Item],
        thinking: Thinking | None,
    ) -> tuple[ParsedChat, list[str]] | None:
        """The chat request for a turn continuing `chain` (the store's, this tenant's, oldest first) with `new`;
        None when it must be converted whole (`translate.to_canonical`). The caller has opened the thinking
        blobs (`translate.open_thinking`), as for a whole conversion."""
        if not chain:
            return None
        ids = tuple(turn.id for turn in chain)
        held = self._get(ids[-1], ids)
        chunk: list[Item] = []
        if held is None:
            held = self._get(ids[-2], ids[:-1]) if len(ids) > 1 else None
            turns = chain[-1:] if held is not None else chain
            for turn in turns:
                chunk += turn.input
                chunk += turn.response.get("output") or []
            held = held or _EMPTY
        if not _plain(chunk, not held.ids) or not _plain(new, not (held.ids or chunk)):
            return None
        head: list[Item] = [{"role": "system", "content": req.instructions}] if req.instructions else []
        added: list[Item] = []
        chat_messages(chunk, added)
        tail: list[Item] = []
        chat_messages(new, tail, {}, thinking)
        if not (head or held.ids or added or tail):
            return None  # nothing to answer: the whole conversion's 400
        body, dropped = chat_body(req, [*head, *added, *tail])
        try:
            part = parsed_body(req, body)
        except ApiError:
            return None  # converted whole: the same 400, with the whole request's positions
        typed = part.request.messages
        h, a = len(head), len(added)
        encoded_added = [_encode(m) for m in added]
        if added:
            typed_added = typed[h : h + a]
            kept = Held(
                ids,
                held.encoded + encoded_added,
                held.typed + typed_added,
                held.vision or _images(typed_added),
                # the ids: a tuple slot each, and their strings (kept alive after the store's cache lets go)
                (held.size or _ENTRY)
                + sum(map(_cost, encoded_added))
                + sum(8 + _sizeof(i) for i in ids[len(held.ids) :]),
            )
            if held.ids:
                self.drop(held.ids[-1])  # one context kept per conversation: the longer one serves its next turn
            self._put(kept)
            held = kept
        encoded = [*map(_encode, head), *held.encoded, *map(_encode, tail)]
        raw = dict(part.raw)
        raw["messages"] = msgspec.Raw(b"[" + b",".join(encoded) + b"]")
        needs = part.needs | {"vision"} if held.vision else part.needs
        messages = [*typed[:h], *held.typed, *typed[h + a :]]
        request = msgspec.structs.replace(part.request, messages=messages)
        parsed = ParsedChat(request=request, raw=raw, needs=needs, reasoning_summary=part.reasoning_summary)
        parsed.long_name = long_name(req, request)
        return parsed, dropped

    def forget(self, response_id: str) -> None:
        """A response was deleted: drop every kept context with its content, not only the one it ends
        (its plaintext would stay in memory until aged out). A scan, bounded by the bytes kept; deletes are rare."""
        for newest in [k for k, held in self._items.items() if response_id in held.ids]:
            self.drop(newest)

    def drop(self, response_id: str) -> None:
        old = self._items.pop(response_id, None)
        if old is not None:
            self._bytes -= old.size

    def _get(self, newest: str, ids: tuple[str, ...]) -> Held | None:
        held = self._items.get(newest)
        if held is None:
            return None
        if held.ids != ids:  # a turn of it was deleted since (the chain now ends earlier): never again of use
            self.drop(newest)
            return None
        self._items.move_to_end(newest)
        return held

    def _put(self, held: Held) -> None:
        if held.size > self.max_bytes:
            return
        self.drop(held.ids[-1])
        self._items[held.ids[-1]] = held
        self._bytes += held.size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.size
