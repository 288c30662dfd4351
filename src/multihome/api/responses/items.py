"""Items, the unit of a Responses conversation: the request's input items in the shape they are stored
and listed in (each with an id), and a list of items as the canonical chat messages a provider is sent.

Mapping (reference/responses.md section 11): messages keep their role; `input_text`/`output_text`
become text parts, `input_image` an image_url part, `input_file` a file part; consecutive
`function_call` items become one assistant message with `tool_calls`; a `function_call_output` is a
`tool` message; `reasoning` items are kept in the store and their plain summary opens the assistant turn they preceded
(chat has no reasoning input).
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from ...schema.responses import InputItem, Part

Item = dict[str, Any]
_DETAILS = frozenset({"auto", "low", "high"})


def new_id(prefix: str) -> str:
    """`prefix_` + 32 hex characters (128 random bits), like OpenAI's opaque ids."""
    return f"{prefix}_{os.urandom(16).hex()}"


def stored_items(items: str | list[InputItem] | None) -> list[Item]:
    """The request's input as items with ids, in OpenAI's item shapes (what input_items lists)."""
    if items is None:
        return []
    if isinstance(items, str):
        return [_message("user", [{"type": "input_text", "text": items}], None)]
    return [stored_item(item) for item in items]


def stored_item(item: InputItem) -> Item:
    kind = item.type or "message"
    if kind == "message":
        role = item.role or "user"
        content = item.content
        if isinstance(content, str):
            parts = [_text_part(role, content)]
        else:
            parts = [_part(p) for p in content or ()]
        return _message(role, parts, item.id)
    if kind == "function_call":
        return {
            "type": "function_call",
            "id": item.id or new_id("fc"),
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
            "status": "completed",
        }
    if kind == "function_call_output":
        output = item.output
        return {
            "type": "function_call_output",
            "id": item.id or new_id("fco"),
            "call_id": item.call_id,
            "output": output if isinstance(output, str) else [_part(p) for p in output or ()],
            "status": "completed",
        }
    out: Item = {  # reasoning (check_item refused every other type)
        "type": "reasoning",
        "id": item.id or new_id("rs"),
        "summary": [msgspec.to_builtins(p) for p in item.summary or ()],
    }
    if item.encrypted_content is not None:
        out["encrypted_content"] = item.encrypted_content
    return out


def _message(role: str, parts: list[Item], item_id: str | None) -> Item:
    return {"type": "message", "id": item_id or new_id("msg"), "status": "completed", "role": role, "content": parts}


def _text_part(role: str, text: str) -> Item:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": text}


def _part(part: Part) -> Item:
    out: Item = msgspec.to_builtins(part)
    if part.type == "output_text":
        out.setdefault("annotations", [])
        out.setdefault("logprobs", [])
    return out


# -- items -> chat messages ---------------------------------------------------------------------------


def chat_messages(items: list[Item], messages: list[Item]) -> None:
    """Append `items` to `messages` as canonical chat messages."""
    for item in items:
        kind = item.get("type")
        if kind == "message":
            _chat_message(item, messages)
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not last.get("_closed"):
                last.setdefault("tool_calls", []).append(call)  # consecutive calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            content = output if isinstance(output, str) else _joined(output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
        elif kind == "reasoning":
            _reasoning(item, messages)
    for message in messages:
        message.pop("_closed", None)
        message.pop("_reasoning", None)


def _reasoning(item: Item, messages: list[Item]) -> None:
    """A reasoning item's plain summary opens the assistant turn it preceded (chat has no reasoning
    input; its encrypted content only the provider that wrote it can read), so a turn served by
    another provider still knows what was thought. No summary: nothing is sent."""
    text = "\n".join(p.get("text") or "" for p in item.get("summary") or () if p.get("text"))
    if text:
        messages.append({"role": "assistant", "content": f"(reasoning summary) {text}", "_reasoning": True})


def _chat_message(item: Item, messages: list[Item]) -> None:
    role = item["role"]
    parts = item["content"]
    if role == "assistant":
        text = _joined(parts)
        refusal = "".join(p.get("refusal") or "" for p in parts if p.get("type") == "refusal")
        last = messages[-1] if messages else None
        if last is not None and last.get("_reasoning") and not last.get("tool_calls"):
            messages.pop()  # the turn's reasoning summary, then its answer: one assistant message
            text = f"{last['content']}\n\n{text}" if text else last["content"]
        message: Item = {"role": "assistant", "content": text or None}
        if refusal:
            message["refusal"] = refusal
        messages.append(message)
        return
    chat_parts = [_chat_part(p) for p in parts]
    if all(p["type"] == "text" for p in chat_parts):
        # Plain text is what every provider takes, and what translating adapters map most simply.
        messages.append({"role": role, "content": "".join(p["text"] for p in chat_parts), "_closed": True})
    else:
        messages.append({"role": role, "content": chat_parts, "_closed": True})


def _chat_part(part: Item) -> Item:
    kind = part.get("type")
    if kind == "input_image":
        image: Item = {"url": part["image_url"]}
        if part.get("detail") in _DETAILS:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_id", "file_data", "filename") if part.get(k) is not None}
        return {"type": "file", "file": file}
    return {"type": "text", "text": part.get("text") or part.get("refusal") or ""}


def _joined(parts: list[Item]) -> str:
    return "".join(p.get("text") or "" for p in parts if p.get("type") in ("input_text", "output_text"))
