"""Claude's signed thinking blocks inside a Responses `reasoning` item, so a Responses tool loop
served by Claude can send them back (docs/translation/reasoning.md).

Claude requires the thinking block of the turn that called a tool back, unchanged, with the tool's
result. A Responses client keeps reasoning only as output items, and `encrypted_content` is the
item's field for "opaque state only the producer reads back": the gateway puts the blocks there,
under its own prefix, and reads them out when the item comes back (stored or replayed by value).
Only the gateway reads it: a native OpenAI upstream is never sent it (native.py), and Claude itself
checks every signature, so a client that edits it only gets Claude's refusal.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from ...schema.bounded import Decoder
from ...schema.chat import ThinkingBlock
from ...schema.errors import bad_request

PREFIX = "mh-thinking-v1."
_blocks = Decoder(list[ThinkingBlock])


def carry(blocks: list[dict[str, Any]]) -> str | None:
    """`encrypted_content` for these blocks; None when none of them could go back (unsigned reasoning)."""
    kept = [b for b in blocks if b.get("signature") or b.get("type") == "redacted_thinking"]
    if not kept:
        return None
    return PREFIX + base64.urlsafe_b64encode(msgspec.json.encode(kept)).decode()


def is_ours(encrypted: Any) -> bool:
    return isinstance(encrypted, str) and encrypted.startswith(PREFIX)


def carried(encrypted: Any, where: str = "encrypted_content") -> list[dict[str, Any]] | None:
    """The blocks an `encrypted_content` the gateway wrote carries; None for anyone else's (OpenAI's).
    A gateway prefix over bytes that are not blocks is a 400 naming the field."""
    if not is_ours(encrypted):
        return None
    try:
        raw = base64.urlsafe_b64decode(encrypted[len(PREFIX) :].encode())
        blocks: list[ThinkingBlock] = _blocks.decode(raw)
    except (ValueError, msgspec.DecodeError):
        raise bad_request(f"{where} is not one the gateway wrote; send reasoning items back as received.") from None
    return [{k: v for k, v in msgspec.structs.asdict(b).items() if v is not None} for b in blocks]
