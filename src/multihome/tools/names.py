"""MCP tool names as OpenAI function names, and back.

MCP allows tool names of 1-128 characters from `A-Z a-z 0-9 _ - .`; an OpenAI function name must
match `^[a-zA-Z0-9_-]{1,64}$`. A model that is offered the tools of several servers as functions
needs names that say the server and cannot collide: `<label>__<tool>`, kept as is when it is already
a valid name, else with every other character made `_`, cut to fit, and ended with a short hash of
the original (so `a.b` and `a_b` stay two functions). The map is built once per server listing and
looked up both ways.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
MAX_LEN = 64
SEPARATOR = "__"


class NameMap:
    """Function names of one server's tools (`label` is the request's `server_label`)."""

    def __init__(self, label: str, tools: Iterable[str]) -> None:
        self.label = label
        self._to_function: dict[str, str] = {}
        self._to_tool: dict[str, str] = {}
        lossy = []
        for tool in tools:  # exact names first: a changed name never takes an exact one's place
            plain = f"{label}{SEPARATOR}{tool}"
            if FUNCTION_NAME.match(plain) and plain not in self._to_tool:
                self._add(tool, plain)
            else:
                lossy.append(tool)
        for tool in lossy:
            if tool not in self._to_function:
                self._add(tool, _hashed(f"{label}{SEPARATOR}{tool}"))

    def _add(self, tool: str, function: str) -> None:
        if function in self._to_tool:  # two 32-bit hashes alike: refuse rather than call the wrong tool
            raise ValueError(f"MCP tools {self._to_tool[function]!r} and {tool!r} map to one function name")
        self._to_function[tool] = function
        self._to_tool[function] = tool

    def function(self, tool: str) -> str:
        return self._to_function[tool]

    def tool(self, function: str) -> str | None:
        """The MCP tool a function name stands for, or None if it is none of this server's."""
        return self._to_tool.get(function)

    def items(self) -> list[tuple[str, str]]:
        """(tool, function name) pairs, in listing order."""
        return list(self._to_function.items())


def _hashed(raw: str) -> str:
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    cleaned = _INVALID.sub("_", raw)[: MAX_LEN - len(digest) - 1]
    return f"{cleaned}_{digest}"


def function_name(label: str, tool: str) -> str:
    """The function name one tool of server `label` has (what `NameMap` gives it when listed alone;
    the same in any listing, as exact names are kept and changed ones carry a hash of the original)."""
    plain = f"{label}{SEPARATOR}{tool}"
    return plain if FUNCTION_NAME.match(plain) else _hashed(plain)
