"""OpenAI's rule for a function tool's name (`a-z A-Z 0-9 _ -`), held at the door: 1 to 64 characters on
chat completions (the chat schema's `FunctionObject.name`), 1 to 128 on the Responses API (its published
`FunctionToolParam.name` and a `function_call_output` item's `name`; openai-openapi, 2026).

A Responses name of 65 to 128 characters reaches a deployment that takes the Responses API natively as
sent; a deployment reached through chat completions (every other provider, translated) holds names to
64, so such a turn is a 400 naming the tool before anything is sent (api/responses/common.py), not an
upstream's refusal.

Every upstream is sent the name, and each refuses a name it cannot take in its own words (or, worse,
mangles it); OpenAI refuses it before anything runs. So does the gateway, in OpenAI's words: the
message, `param` and `code` OpenAI answers with (`invalid_value` for a character outside the pattern,
`string_above_max_length`, `empty_string`). The name itself is never echoed, as OpenAI does not.
"""

from __future__ import annotations

import re

from .errors import bad_request

MAX_NAME = 64  # chat completions
MAX_RESPONSES_NAME = 128  # the Responses API
PATTERN = "^[a-zA-Z0-9_-]+$"
_NAME = re.compile(r"[a-zA-Z0-9_-]+")


def check_function_name(name: str, param: str, limit: int = MAX_NAME) -> None:
    """A 400 naming `param` (e.g. `tools[0].function.name`) unless `name` keeps OpenAI's rule (`limit`
    characters at most: MAX_NAME for chat, MAX_RESPONSES_NAME for Responses)."""
    if len(name) > limit:
        raise bad_request(
            f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, but got a "
            f"string with length {len(name)} instead.",
            param=param,
            code="string_above_max_length",
        )
    if not name:
        raise bad_request(
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, but got an empty string "
            "instead.",
            param=param,
            code="empty_string",
        )
    if _NAME.fullmatch(name) is None:
        raise bad_request(
            f"Invalid '{param}': string does not match pattern. Expected a string that matches the pattern "
            f"'{PATTERN}'.",
            param=param,
            code="invalid_value",
        )


__all__ = ["MAX_NAME", "MAX_RESPONSES_NAME", "PATTERN", "check_function_name"]
