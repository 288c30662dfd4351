"""Read the canonical (OpenAI) request the way every translating adapter needs to."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from ..schema.chat import ChatRequest, ContentPart, Message
from ..schema.errors import ApiError, bad_request, echo


def system_text(messages: list[Message]) -> str | None:
    """All system and developer messages, joined in order (providers take one system field)."""
    parts = [text_of(m) for m in messages if m.role in ("system", "developer")]
    return "\n\n".join(p for p in parts if p) or None


def text_of(message: Message) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text or "" for p in content if p.type == "text")


def parts_of(message: Message) -> list[ContentPart]:
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [ContentPart(type="text", text=content)] if content else []
    return content


def raw_json(raw: msgspec.Raw | bytes | str, where: str) -> Any:
    """Decode JSON the front door only skipped over (raw fields, JSON inside strings).

    Skipping checks the syntax, not the content: such a value may still hold invalid UTF-8, a
    number beyond float range, or nesting deeper than the decoder's stack. Those are the
    client's mistakes, so they are a 400 naming the field, never an exception from a translator.
    """
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise bad_request(f"{where}: cannot be read as JSON ({exc}).", param=where) from None
    except RecursionError:
        raise bad_request(f"{where}: is nested too deeply.", param=where) from None


def tool_arguments(arguments: str, where: str) -> dict[str, Any]:
    """OpenAI tool-call arguments are JSON text; the other providers take an object."""
    try:
        value = raw_json(arguments, where) if arguments else {}
    except ApiError:
        raise bad_request(
            f"{where}: function.arguments must be a JSON object encoded as a string.", param=where
        ) from None
    if not isinstance(value, dict):
        raise bad_request(f"{where}: function.arguments must encode a JSON object.", param=where)
    return value


def json_schema_of(raw: msgspec.Raw) -> dict[str, Any]:
    return msgspec.json.decode(raw) if len(raw) else {}


def data_url(url: str, where: str) -> tuple[str, bytes]:
    """`data:image/png;base64,...` -> ("image/png", bytes). Raises 400 for anything else."""
    if not url.startswith("data:") or ";base64," not in url:
        raise bad_request(f"{where}: this provider accepts images only as base64 data URLs.", param=where)
    head, _, data = url[5:].partition(";base64,")
    try:
        return head, base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: the data URL is not valid base64.", param=where) from None


def max_output_tokens(req: ChatRequest) -> int | None:
    return req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens


def stop_list(req: ChatRequest) -> list[str] | None:
    if req.stop is None:
        return None
    return [req.stop] if isinstance(req.stop, str) else list(req.stop)


def unsupported(param: str, provider: str, value: str | None = None) -> ApiError:
    """The 400 for what `provider` cannot take. `param` is the field's path, as OpenAI's errors name one
    (`tools[1].type`), so a client can find it; `value`, when given, is what the field held (a type, a
    role), said in the message."""
    what = f"'{param}'" if value is None else f"{param} '{echo(value)}'"
    return bad_request(
        f"{what} is not supported when the request is served by {provider}.",
        param=param,
        code="unsupported_parameter",
    )
