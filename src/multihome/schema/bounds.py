"""The numeric bounds of what a client sends, in one place: OpenAI's published schema where it gives
them (`n` 1..128, `top_logprobs` 0..20, `logit_bias` values -100..100, `seed` a signed 64-bit integer,
penalties -2..2), and the gateway's own cap on counts the schema leaves open (token limits,
`dimensions`): 2^31-1, far above any model's and within every provider's integers, so a 70-bit
integer is a 400 naming the field, never forwarded to overflow an upstream or a database column.

The items of one request (chat `messages`, Responses `input`, Anthropic `messages`) are capped at
MAX_ITEMS: OpenAI publishes no cap there, and the gateway's work per item (checks, storage, translation)
would otherwise let one body of half a million tiny items hold the event loop for seconds while every
other client waits (docs/hostile-input.md). For the same reason the parts in all of a request's items
together (content parts, tool calls, blocks) are capped at MAX_PARTS, and its tools at MAX_TOOLS on chat
completions (OpenAI's own answer beyond 128) and MAX_TOOLS_OTHER on the doors that translate them."""

from __future__ import annotations

from typing import Final

from .errors import ApiError, bad_request

MAX_INT: Final = 2**31 - 1
INT64: Final = 2**63  # seed: -2^63 .. 2^63-1
MAX_N: Final = 128
MAX_TOP_LOGPROBS: Final = 20
LOGIT_BIAS: Final = 100.0
PENALTY: Final = 2.0
MAX_METADATA: Final = 16  # pairs of `metadata`
MAX_SAFETY_IDENTIFIER: Final = 64
MAX_ITEMS: Final = 10_000  # far beyond a real conversation: 10,000 messages of 100 tokens fill a 1M-token context
# Content parts, tool calls and blocks in all the items of one request: every message of a conversation at
# MAX_ITEMS may still be a list of one part; OpenAI takes at most 500 images in a request.
MAX_PARTS: Final = 10_000
MAX_TOOLS: Final = 128  # chat completions: OpenAI answers 400 `array_above_max_length` beyond it
# Responses and Anthropic tools (and the chat request a turn is translated into, with an MCP server's tools):
# neither API publishes a cap; far beyond what a model can choose among.
MAX_TOOLS_OTHER: Final = 1_000
MAX_LOGIT_BIAS: Final = 10_000  # token ids in chat's `logit_bias` (OpenAI publishes no cap)
MAX_EMBEDDING_INPUTS: Final = 2048  # items of an embeddings `input` (OpenAI's published schema)
MAX_EMBEDDING_TOKENS: Final = 300_000  # token ids in all of an embeddings `input` (OpenAI's published limit)


def count(value: int | None, param: str, low: int = 1) -> None:
    """A token limit or size: an integer from `low` to MAX_INT (None: absent)."""
    if value is not None and not low <= value <= MAX_INT:
        raise bad_request(f"'{param}' must be an integer from {low} to {MAX_INT}.", param=param, code="invalid_value")


def too_many_items(length: int, param: str) -> ApiError:
    """OpenAI's own 400 for an array of a request's items (messages, input items) longer than MAX_ITEMS
    (its words and code, as it answers for `tools` beyond 128)."""
    return bad_request(
        f"Invalid '{param}': array too long. Expected an array with maximum length {MAX_ITEMS}, but got an "
        f"array with length {length} instead.",
        param=param,
        code="array_above_max_length",
    )


def check_metadata(metadata: dict[str, str] | None) -> None:
    """OpenAI's `metadata` (chat, Responses, Conversations): at most 16 pairs, keys of at most 64
    characters, values of at most 512."""
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA:
        raise bad_request(f"'metadata' holds at most {MAX_METADATA} pairs.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64:
            raise bad_request("'metadata' keys are at most 64 characters.", param="metadata")
        if len(value) > 512:
            raise bad_request(f"'metadata.{key}' is longer than 512 characters.", param=f"metadata.{key}")


def check_safety_identifier(value: str | None) -> None:
    """OpenAI's `safety_identifier` (chat, Responses): at most 64 characters."""
    if value is not None and len(value) > MAX_SAFETY_IDENTIFIER:
        raise bad_request(
            f"'safety_identifier' is at most {MAX_SAFETY_IDENTIFIER} characters.",
            param="safety_identifier",
            code="string_above_max_length",
        )


def too_many(param: str, length: int, most: int) -> ApiError:
    """OpenAI's own 400 for an array longer than `most` (as it answers for chat `tools` beyond 128)."""
    return bad_request(
        f"Invalid '{param}': array too long. Expected an array with maximum length {most}, but got an array "
        f"with length {length} instead.",
        param=param,
        code="array_above_max_length",
    )


def too_many_parts(param: str, total: int, items: str, noun: str) -> ApiError:
    """A request whose items hold more than MAX_PARTS parts in all: `param` is the array that passed it."""
    return bad_request(
        f"Invalid '{param}': array too long. A request may hold at most {MAX_PARTS} {noun} in all its "
        f"'{items}' together; with this array it holds at least {total}. Send fewer parts (join texts into one).",
        param=param,
        code="array_above_max_length",
    )


def between(value: float | None, low: float, high: float, param: str) -> None:
    if value is not None and not low <= value <= high:
        raise bad_request(f"'{param}' must be between {_num(low)} and {_num(high)}.", param=param, code="invalid_value")


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)
