"""Stored state never holds a tool call without its result: checked on every write of a response or
of conversation items (state/store.py), before anything is sealed.

One broken pair blocks an agent for good in runtimes that store a call and its result apart: every
later turn sends the dangling call, and every provider refuses the context. Here an MCP call is one
item (`mcp_call`) that holds the call and its output or error together; a write that would store
one without either is refused, so a crash or a bug can lose a step but never leave a half of one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class BrokenPair(ValueError):
    """A write that would store a tool call without its result."""


def check_pairs(items: Iterable[dict[str, Any]]) -> None:
    for item in items:
        if item.get("type") == "mcp_call" and item.get("output") is None and item.get("error") is None:
            raise BrokenPair(f"mcp_call {str(item.get('id'))[:80]} has neither output nor error")


def orphan_output(context: Iterable[dict[str, Any]], new: Sequence[dict[str, Any]]) -> tuple[int, str] | None:
    """The first `function_call_output` of `new` that answers no `function_call` before it (in `context`
    or earlier in `new`): its index and call_id. Such a result alone is refused by every provider, so
    stored in a conversation it would make every later turn fail. Cheap when `new` has no output."""
    if not any(item.get("type") == "function_call_output" for item in new):
        return None
    calls = {item.get("call_id") for item in context if item.get("type") == "function_call"}
    for i, item in enumerate(new):
        kind = item.get("type")
        if kind == "function_call":
            calls.add(item.get("call_id"))
        elif kind == "function_call_output" and item.get("call_id") not in calls:
            return i, str(item.get("call_id"))
    return None


CALL_ITEMS = frozenset({"function_call", "function_call_output"})


def duplicate_call(context: Iterable[dict[str, Any]], new: Sequence[dict[str, Any]]) -> tuple[int, str, str] | None:
    """The first item of `new` that repeats a call_id: a `function_call` whose call_id a call before it
    has (in `context` or earlier in `new`), or a `function_call_output` for a call already answered:
    its index, type and call_id. A result cannot say which of two calls it answers; providers refuse the
    pair (OpenAI: "Duplicate function_call_output for call_id ..."). Duplicates already in `context` are
    not this input's: never named. Cheap when `new` has neither type."""
    if not any(item.get("type") in CALL_ITEMS for item in new):
        return None
    calls: set[Any] = set()
    answered: set[Any] = set()
    for item in context:
        kind = item.get("type")
        if kind == "function_call":
            calls.add(item.get("call_id"))
        elif kind == "function_call_output":
            answered.add(item.get("call_id"))
    for i, item in enumerate(new):
        kind = item.get("type")
        seen = calls if kind == "function_call" else answered if kind == "function_call_output" else None
        if seen is None:
            continue
        call_id = item.get("call_id")
        if call_id in seen:
            return i, str(kind), str(call_id)
        seen.add(call_id)
    return None


def unanswered_call(context: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> str | None:
    """The call_id of the first `function_call` (of `context`, then of `new`) that no `function_call_output`
    answers. Sent on, every provider refuses the turn (OpenAI: "No tool output found for function call
    ..."), so a create with one is refused before any upstream call. One pass: every turn runs it over
    its whole context."""
    calls: list[Any] = []
    answered: set[Any] = set()
    for seq in (context, new):
        for item in seq:
            kind = item.get("type")
            if kind == "function_call":
                calls.append(item.get("call_id"))
            elif kind == "function_call_output":
                answered.add(item.get("call_id"))
    return next((str(call) for call in calls if call not in answered), None)


def broken_pair(context: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> tuple[str, str] | None:
    """`unanswered_call`'s pass, which also finds a `function_call_output` of the context that answers no
    call before it (its call was deleted from the conversation: every provider refuses such a result):
    ("orphan", call_id) first, else ("unanswered", call_id), else None. One pass over the context."""
    calls: dict[Any, None] = {}  # in order (the first unanswered is named)
    answered: set[Any] = set()
    orphan: Any = None
    for seq in (context, new):
        for item in seq:
            kind = item.get("type")
            if kind == "function_call":
                calls[item.get("call_id")] = None
            elif kind == "function_call_output":
                call_id = item.get("call_id")
                answered.add(call_id)
                if orphan is None and call_id not in calls:
                    orphan = call_id
    if orphan is not None:
        return "orphan", str(orphan)
    unanswered = next((str(call) for call in calls if call not in answered), None)
    return ("unanswered", unanswered) if unanswered is not None else None
