"""Wrong types anywhere in a request give a 4xx (or a reply), never a 500 or a dropped connection."""

from __future__ import annotations

import copy

import httpx
import pytest

from .sim_helpers import AZURE_KEY, OPENAI_KEY

BASE = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "s"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "parallel"}, {"type": "image_url", "image_url": {"url": "x"}}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "r"},
        {"role": "user", "content": "again"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}},
        },
        {"type": "function", "function": {"name": "g"}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "stop": ["x"],
    "n": 1,
    "max_tokens": 5,
    "stream": False,
}
VALUES = [None, 1, -1, "x", [], {}, [1], True, 1.5]


def paths(obj, prefix=()):
    """Every key path in a nested dict/list structure."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from paths(v, prefix + (i,))


def mutate(path, value):
    body = copy.deepcopy(BASE)
    node = body
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return body


@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_wrong_types_never_500(osim, asim, kind):
    sim, url, headers = (
        (osim, osim.url + "/v1/chat/completions", {"Authorization": f"Bearer {OPENAI_KEY}"})
        if kind == "openai"
        else (
            asim,
            asim.url + "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            {"api-key": AZURE_KEY},
        )
    )
    statuses = set()
    with httpx.Client(headers=headers, timeout=5) as c:
        for path in paths(BASE):
            for value in VALUES:
                r = c.post(url, json=mutate(path, value))
                assert r.status_code < 500, (path, value, r.text)
                statuses.add(r.status_code)
        emb_url = url.replace("chat/completions", "embeddings")
        for value in VALUES + [[[]], [["x"]], [1, "x"]]:
            for key in ("input", "dimensions", "encoding_format", "model"):
                body = {"model": "gpt-4o", "input": "x", key: value}
                assert c.post(emb_url, json=body).status_code < 500, (key, value)
    assert statuses == {200, 400}
    assert sim.stats()["errors"] > 0
