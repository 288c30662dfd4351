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
import time
from typing import Any

import msgspec

from ...schema.errors import bad_request, echo
from ...schema.responses import MEMORY_LABEL, InputItem, Part
from ...state.pairs import broken_pair, duplicate_call, orphan_output, unanswered_call
from ...tools.model import ERROR_MARKER
from ...tools.names import function_name
from .thinking import Thinking

Item = dict[str, Any]
_DETAILS = frozenset({"auto", "low", "high"})


def refuse_orphans(context: list[Item], new: list[Item], param: str) -> None:
    """A 400, as OpenAI answers, for a function_call_output whose call is not in the context: sent on, every
    provider refuses the turn; appended to a conversation, every later turn of it."""
    found = orphan_output(context, new)
    if found is not None:
        index, call_id = found
        raise bad_request(
            f"No tool call found for function call output with call_id '{echo(call_id)}' "
            "(the function_call it answers must come before it, in this input or in the context).",
            param=f"{param}[{index}]",
        )


def refuse_duplicate_calls(context: list[Item], new: list[Item], param: str) -> None:
    """A 400 naming the item, as OpenAI refuses it, for a second function_call with one call_id, or a
    second function_call_output for one call (in this input, or beside the context's): which call a
    result answers would be a guess, and every provider refuses the pair."""
    found = duplicate_call(context, new)
    if found is None:
        return
    index, kind, call_id = found
    if kind == "function_call":
        message = (
            f"Duplicate 'call_id' '{echo(call_id)}': {param}[{index}] is a second function_call with it. Each "
            "function_call needs a call_id of its own."
        )
    else:
        message = (
            f"Duplicate function_call_output for call_id '{echo(call_id)}' ({param}[{index}]). Each function_call "
            "must have exactly one matching function_call_output."
        )
    raise bad_request(message, param=f"{param}[{index}]", code="duplicate_call_id")


def refuse_unanswered(context: list[Item], new: list[Item], conversation: bool = False) -> None:
    """OpenAI's 400 for a function_call (in the input or the context it continues) left without its
    function_call_output: every upstream would refuse the turn, each in its own words; refused here
    before any upstream call, the same for every provider. In a `conversation`, also a result whose
    call was deleted from it (DELETE of the call's item), which the client can delete in turn."""
    if not conversation:  # a chain: an orphan there (an ancestor deleted) is sent as before
        found = unanswered_call(context, new)
        if found is not None:
            raise bad_request(f"No tool output found for function call {echo(found)}.", param="input")
        return
    broken = broken_pair(context, new)
    if broken is None:
        return
    kind, call_id = broken
    if kind == "orphan":  # refuse_orphans checked the input: this one is in the conversation
        raise bad_request(
            f"The conversation holds a function_call_output for call_id '{echo(call_id)}' whose function_call "
            "was deleted from it: delete that output too (DELETE /v1/conversations/{id}/items/{item_id}), "
            "then continue.",
            param="conversation",
            code="orphaned_function_call_output",
        )
    raise bad_request(f"No tool output found for function call {echo(call_id)}.", param="input")


def refuse_duplicate_ids(context: list[Item], new: list[Item], param: str) -> None:
    """Item ids are unique per conversation: a new item that reuses one (of the conversation's, or of
    another new item) is a 400 before any upstream call, not a conflict when the answer is stored."""
    seen = {item.get("id") for item in context}
    for i, item in enumerate(new):
        if item.get("id") in seen:
            raise bad_request(
                f"An item with id '{echo(item.get('id'))}' is already in the conversation (ids are unique per "
                "conversation); send new items without an 'id' and the gateway assigns one.",
                param=f"{param}[{i}].id",
                code="duplicate_item_id",
            )
        seen.add(item.get("id"))


def new_id(prefix: str) -> str:
    """`prefix_` + 32 hex characters: the time in milliseconds (12), then 80 random bits from the OS.
    Opaque to clients, as OpenAI's ids (which also begin with a time); in time order so the tables keyed
    by them (responses, conversations and their items) insert at the end of their indexes, as request
    ids do (api/pipeline.py)."""
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


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
            parts = [_part(p, role) for p in content or ()]
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
    if kind.startswith("mcp_"):
        return mcp_item(item, kind)
    out: Item = {  # reasoning (check_item refused every other type)
        "type": "reasoning",
        "id": item.id or new_id("rs"),
        "summary": [msgspec.to_builtins(p) for p in item.summary or ()],
    }
    if item.encrypted_content is not None:
        out["encrypted_content"] = item.encrypted_content
    return out


def mcp_item(item: InputItem, kind: str) -> Item:
    """An MCP item as stored (OpenAI's fields; check_item made sure the required ones are there)."""
    if kind == "mcp_approval_response":
        return {
            "type": kind,
            "id": item.id or new_id("mcpa"),
            "approval_request_id": item.approval_request_id,
            "approve": item.approve,
            "reason": item.reason,
        }
    if kind == "mcp_list_tools":
        return {
            "type": kind,
            "id": item.id,
            "server_label": item.server_label,
            "tools": item.tools,
            "error": item.error,
        }
    out: Item = {"type": kind, "id": item.id, "server_label": item.server_label, "name": item.name}
    out["arguments"] = item.arguments
    if kind == "mcp_call":
        out.update(
            approval_request_id=item.approval_request_id,
            output=item.output,
            error=item.error,
            status=item.status or ("failed" if item.error is not None else "completed"),
        )
    return out


def _message(role: str, parts: list[Item], item_id: str | None) -> Item:
    return {"type": "message", "id": item_id or new_id("msg"), "status": "completed", "role": role, "content": parts}


def _text_part(role: str, text: str) -> Item:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": text}


def _part(part: Part, role: str | None = None) -> Item:
    if role == "assistant" and part.type == "input_text":  # listed as OpenAI lists an assistant's text
        return _text_part(role, part.text or "")
    out: Item = msgspec.to_builtins(part)
    if part.type == "output_text":
        out.setdefault("annotations", [])
        out.setdefault("logprobs", [])
    elif part.type == "input_image":
        out.setdefault("detail", "auto")  # required in OpenAI's listed item (the SDK's type fails without it)
    return out


# -- items -> chat messages ---------------------------------------------------------------------------


def chat_messages(
    items: list[Item], messages: list[Item], asked: dict[str, Item] | None = None, thinking: Thinking | None = None
) -> None:
    """Append `items` to `messages` as canonical chat messages. Runs on every turn over the whole
    context, so the common shapes (one text part) take the short way. `asked`: MCP approval requests
    seen so far, by id (shared by the context's call and the new input's: an answer refers back).
    `thinking`: the turn's opened thinking blobs (thinking.py); without it no blocks are sent back."""
    summary: Item | None = None  # the last message, when it is a reasoning summary
    asked = {} if asked is None else asked
    for item in items:
        kind = item.get("type")
        last = messages[-1] if messages else None
        if kind == "message":
            if item["role"] == "assistant":
                message = _assistant(item["content"])
                if last is not None and last is summary and "tool_calls" not in last:
                    messages.pop()  # the turn's reasoning summary, then its answer: one assistant message
                    text, before = message["content"], last["content"]
                    message["content"] = f"{before}\n\n{text}" if text and before else (before or text)
                    if "thinking_blocks" in last:
                        message["thinking_blocks"] = last["thinking_blocks"]
                messages.append(message)
            else:
                messages.append({"role": item["role"], "content": _user_content(item["content"])})
            summary = None
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # consecutive calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            content = output if isinstance(output, str) else _joined(output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
            summary = None
        elif kind == "mcp_call" or kind == "mcp_approval_request" or kind == "mcp_approval_response":
            _mcp_messages(item, kind, asked, messages)
            summary = None
        elif kind == "reasoning":
            # Its plain summary opens the assistant turn it preceded (chat has no reasoning input; the
            # encrypted content only its own provider can read), so a turn served by another provider
            # still knows what was thought. No summary: nothing is sent.
            text = "\n".join(p.get("text") or "" for p in item.get("summary") or () if p.get("text"))
            # Claude's signed blocks, when the gateway carried them (thinking.py): Claude takes them back.
            blocks = thinking.blocks(item.get("encrypted_content")) if thinking is not None else None
            if text or blocks:
                summary = {"role": "assistant", "content": f"(reasoning summary) {text}" if text else None}
                if blocks:
                    summary["thinking_blocks"] = blocks
                messages.append(summary)


def _mcp_messages(item: Item, kind: str, asked: dict[str, Item], messages: list[Item]) -> None:
    pair = mcp_pair(item, kind, asked)
    if pair is not None:
        name, call_id, arguments, output = pair
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": output})


def mcp_pair(item: Item, kind: str, asked: dict[str, Item]) -> tuple[str, str, str, str] | None:
    """An MCP item as what a provider is sent: a function call and its output (a pair, always: a call
    without its result is never stored), as (function name, call id, arguments, output); None for what
    is sent as nothing. A pending approval request is not sent; a refused one is sent as a call answered
    with the refusal, so the model knows it did not run. `mcp_list_tools` is not a message: its tools
    are offered as functions. The MCP calls ran in the gateway, so no upstream knows them otherwise."""
    if kind == "mcp_list_tools":
        return None
    if kind == "mcp_approval_request":
        asked[item["id"]] = item
        return None
    if kind == "mcp_approval_response":
        request = asked.get(item["approval_request_id"])
        if request is None or item["approve"]:
            return None  # approved: the mcp_call that ran says the rest
        reason = f" ({item['reason']})" if item.get("reason") else ""
        return _named(request, request["id"], f"The user did not approve this call{reason}; it did not run.")
    error = item.get("error")
    if error is not None:
        output = ERROR_MARKER + (error if isinstance(error, str) else _error_text(error))
    else:
        output = item.get("output") or ""
    return _named(item, item["id"], output)


def _named(item: Item, call_id: str, output: str) -> tuple[str, str, str, str]:
    label = item["server_label"]  # the memory tools are offered by their own names (state/memory/tools.py)
    name = item["name"] if label == MEMORY_LABEL else function_name(label, item["name"])
    return name, call_id, item["arguments"], output


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        if error.get("message"):
            return str(error["message"])
        content = error.get("content")
        if isinstance(content, list):
            return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return str(error)


def _assistant(parts: list[Item]) -> Item:
    if len(parts) == 1 and parts[0].get("type") == "output_text":
        return {"role": "assistant", "content": parts[0].get("text") or None}
    message: Item = {"role": "assistant", "content": _joined(parts) or None}
    refusal = "".join(p.get("refusal") or "" for p in parts if p.get("type") == "refusal")
    if refusal:
        message["refusal"] = refusal
    return message


def _user_content(parts: list[Item]) -> str | list[Item]:
    if len(parts) == 1 and parts[0].get("type") == "input_text":
        return str(parts[0].get("text") or "")
    chat_parts = [_chat_part(p) for p in parts]
    if all(p["type"] == "text" for p in chat_parts):
        # Plain text is what every provider takes, and what translating adapters map most simply.
        return "".join(p["text"] for p in chat_parts)
    return chat_parts


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
