"""A Responses request's named `tool_choice` must name one of its function tools; naming a memory tool
is refused with its own reason (docs/memory.md "Not yet"), not as a name missing from `tools`."""

from __future__ import annotations

import json

import pytest

from multihome.schema.errors import ApiError
from multihome.schema.responses import parse_create


def _refusal(tools: list[dict], name: str) -> str:
    body = {"model": "m", "input": "hi", "tools": tools, "tool_choice": {"type": "function", "name": name}}
    with pytest.raises(ApiError) as refused:
        parse_create(json.dumps(body).encode())
    assert refused.value.status == 400 and refused.value.body.param == "tool_choice.name"
    return refused.value.body.message


def test_naming_a_memory_tool_says_the_model_chooses():
    said = _refusal([{"type": "memory", "user_id": "u"}], "memory_search")
    assert "memory tool 'memory_search'" in said and "not in 'tools'" not in said


def test_naming_a_missing_function_says_so():
    said = _refusal([{"type": "function", "name": "f", "parameters": {"type": "object"}}], "g")
    assert "'g', which is not in 'tools'" in said
