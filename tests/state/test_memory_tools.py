"""The built-in memory tools a Responses run can enable: the model is offered `memory_search` (and
`memory_write` unless the request says not), calls run in the request's namespace only, and bad
calls are answered to the model instead of failing the run."""

from __future__ import annotations

import json

import pytest

from multihome.crypto import open_keyring
from multihome.schema.errors import ApiError
from multihome.state.memory import MemoryStore, NewRecord
from multihome.state.memory.tools import NAMES, call, function_tools, parse_tool
from multihome.storage.engine import create_engine

from .test_memory import embedder

pytestmark = pytest.mark.anyio


@pytest.fixture
async def memory(db_url, kms_config):
    engine = create_engine(db_url)
    keyring = open_keyring(kms_config, engine)
    store = MemoryStore(engine, keyring, embedder)
    yield store
    await store.close()
    await keyring.close()
    await engine.dispose()


def test_the_tools_offered_follow_the_request():
    spec = parse_tool({"type": "memory", "user_id": "u1", "top_k": 3})
    assert [t["name"] for t in function_tools(spec)] == ["memory_search", "memory_write"]
    assert {t["name"] for t in function_tools(spec)} == NAMES
    search = function_tools(spec)[0]
    assert search["type"] == "function" and search["parameters"]["properties"]["top_k"]["maximum"] == 3
    read_only = parse_tool({"type": "memory", "user_id": "u1", "write": False})
    assert [t["name"] for t in function_tools(read_only)] == ["memory_search"]


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "memory", "top_k": 0},
        {"type": "memory", "user": "x"},
        {"type": "mcp"},
        {"type": "memory", "user_id": 3},
    ],
)
def test_a_bad_memory_tool_is_a_400(raw):
    with pytest.raises(ApiError) as err:
        parse_tool(raw)
    assert err.value.status == 400


async def test_the_model_searches_and_writes_in_the_requests_namespace_only(memory):
    await memory.write("t1", "bot", "u1", [NewRecord("The user's daughter is called Maya.", {})])
    await memory.write("t1", "bot", "u2", [NewRecord("The user's daughter is called Zoe.", {})])
    spec = parse_tool({"type": "memory", "agent_id": "bot", "user_id": "u1", "top_k": 2})

    out = json.loads(await call(memory, "t1", spec, "memory_search", json.dumps({"query": "daughter's name"})))
    assert [r["text"] for r in out["results"]] == ["The user's daughter is called Maya."]
    out = json.loads(await call(memory, "t2", spec, "memory_search", json.dumps({"query": "daughter's name"})))
    assert out["results"] == []  # the tenant is the caller's: t2 has no such namespace

    done = json.loads(await call(memory, "t1", spec, "memory_write", json.dumps({"text": "Maya plays the violin."})))
    assert done["stored"] and (await memory.get("t1", done["id"])).user_id == "u1"
    out = json.loads(await call(memory, "t1", spec, "memory_search", json.dumps({"query": "violin", "top_k": 50})))
    assert out["results"][0]["id"] == done["id"] and len(out["results"]) <= 2


async def test_bad_calls_are_answered_to_the_model(memory):
    spec = parse_tool({"type": "memory", "user_id": "u1", "write": False})
    for name, args in [
        ("memory_search", "not json"),
        ("memory_search", json.dumps({"query": " "})),
        ("memory_write", json.dumps({"text": "x"})),  # writing is not enabled
        ("memory_delete", "{}"),
    ]:
        assert "error" in json.loads(await call(memory, "t1", spec, name, args))
    writer = parse_tool({"type": "memory", "user_id": "u1"})
    out = json.loads(await call(memory, "t1", writer, "memory_write", json.dumps({"text": "x" * 40_000})))
    assert "32768" in out["error"]
