"""InvokeModel and InvokeModelWithResponseStream for Claude: Anthropic's Messages body as Bedrock
takes it, and the answer as Bedrock gives it back.

The body is a Messages body with ``"anthropic_version": "bedrock-2023-05-31"`` (the anthropic
SDK's AnthropicBedrock may write its dated API version there instead) and without ``model`` or
``stream``: the URL names the model and the operation decides streaming, and Bedrock refuses the
two as extraneous keys, in its own words. Validation past that, the reply and the events are the
``anthropic`` simulator's (``simulators/anthropic/wire.py``); a stream is one event-stream
``chunk`` frame per Messages event, the event's JSON base64-encoded in ``bytes``, with
``amazon-bedrock-invocationMetrics`` on ``message_stop``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import msgspec

from ..anthropic import wire
from ..chat import BadRequest

VERSIONS = ("bedrock-2023-05-31", "2026-10-21")
_encode = msgspec.json.encode
# Profile prefixes a model id may carry (a cross-region inference profile of a Claude model).
_PROFILES = ("us.", "eu.", "apac.", "global.", "jp.", "au.", "us-gov.")


def base_model(model: str) -> str:
    """The base model id of `model` (a model id, a cross-region profile id or an ARN)."""
    base = model.rsplit("/", 1)[-1]
    for prefix in _PROFILES:
        if base.startswith(prefix):
            return base[len(prefix) :]
    return base


def is_claude(model: str) -> bool:
    """Whether InvokeModel on `model` (a model id, a profile id or an ARN) takes a Messages body."""
    return base_model(model).startswith("anthropic.")


def _malformed(what: str) -> BadRequest:
    return BadRequest(f"Malformed input request: #: {what}, please reformat your input and try again.")


def messages_body(body: dict, model: str) -> dict:
    """The Messages body Bedrock hands Claude, after Bedrock's own checks."""
    for key in ("model", "stream"):
        if key in body:
            raise _malformed(f"extraneous key [{key}] is not permitted")
    version = body.get("anthropic_version")
    if version is None:
        raise _malformed("required key [anthropic_version] not found")
    if version not in VERSIONS:
        raise BadRequest(f"Invalid API version: {version!r}. Expected one of {', '.join(VERSIONS)}.")
    for i, message in enumerate(body.get("messages") or ()):
        content = message.get("content") if isinstance(message, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            source = block.get("source") if isinstance(block, dict) else None
            if block.get("type") == "image" and isinstance(source, dict) and source.get("type") == "url":
                raise _malformed(f"messages/{i}/content/{j}/source: image URLs are not supported, send base64")
    inner = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
    inner["model"] = model
    return inner


def metrics(mp: wire.MessagePlan) -> dict:
    return {
        "inputTokenCount": mp.input_tokens,
        "outputTokenCount": mp.output_tokens,
        "invocationLatency": 100 + 10 * mp.output_tokens,
        "firstByteLatency": 100,
    }


def stream_chunks(mp: wire.MessagePlan) -> Iterator[tuple[bool, dict]]:
    """(is_content, `chunk` event payload) per Messages event."""
    for stage, _, data in wire.stream_events(mp):
        if data.get("type") == "ping":
            continue  # Bedrock does not forward Anthropic's pings
        if data.get("type") == "message_stop":
            data = {**data, "amazon-bedrock-invocationMetrics": metrics(mp)}
        yield stage == wire.CONTENT, {"bytes": base64.b64encode(_encode(data)).decode()}
