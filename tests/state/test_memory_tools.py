"""The built-in memory tools a Responses run can enable: the model is offered `memory_search` and
`memory_write` (or those the request allows), calls run in the request's namespace and the caller's
tenant only, bad calls become failed items the model reads instead of failing the run, and a write
tried again under the same idempotency key (a run resumed after a crash) is not written twice."""

from __future__ import annotations

import json

import pytest

from multihome.crypto import open_keyring
from multihome.schema.errors import ApiError
from multihome.state.memory import MemoryStore, NewRecord
from multihome.state.memory.store import keyed_id
from multihome.state.memory.tools import NAMES, MemoryTools, echoed, function_tools, parse_tool
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


def names(spec) -> list[str]:
    return [t["function"]["name"] for t in function_tools(spec)]


def test_the_tools_offered_follow_the_request():
    spec = parse_tool({"type": "memory", "user_id": "u1", "top_k": 3})
    assert names(spec) == list(NAMES) == ["memory_search", "memory_write"]
    search = function_tools(spec)[0]
    assert search["type"] == "function" and search["function"]["parameters"]["properties"]["top_k"]["maximum"] == 3
    read_only = parse_tool({"type": "memory", "user_id": "u1", "allowed_tools": ["memory_search"]})
    assert names(read_only) == ["memory_search"]
    shown = echoed(read_only)  # as a response's `tools` shows it: an mcp tool the SDKs parse
    assert shown["type"] == "mcp" and shown["server_label"] == "memory"
    assert shown["allowed_tools"] == ["memory_search"] and shown["require_approval"] == "never"


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "memory", "top_k": 0},
        {"type": "memory", "user": "x"},
        {"type": "mcp"},
        {"type": "memory", "user_id": 3},
        {"type": "memory", "allowed_tools": []},
        {"type": "memory", "allowed_tools": ["memory_delete"]},
        {"type": "memory", "ttl_seconds": 0},
        {"type": "memory", "agent_id": "x" * 201},
    ],
)
def test_a_bad_memory_tool_is_a_400(raw):
    with pytest.raises(ApiError) as err:
        parse_tool(raw)
    assert err.value.status == 400


def item(name: str, arguments: str, n: int = 1) -> dict:
    return {"type": "mcp_call", "id": f"mcp_{n}", "server_label": "memory", "name": name, "arguments": arguments}


async def run(tools: MemoryTools, name: str, args: object, key: str = "resp_1/1/mcp_1") -> dict:
    raw = args if isinstance(args, str) else json.dumps(args)
    return await tools.call(item(name, raw), key)


async def test_the_model_searches_and_writes_in_the_requests_namespace_only(memory):
    await memory.write("t1", "bot", "u1", [NewRecord("The user's daughter is called Maya.", {})])
    await memory.write("t1", "bot", "u2", [NewRecord("The user's daughter is called Zoe.", {})])
    spec = parse_tool({"type": "memory", "agent_id": "bot", "user_id": "u1", "top_k": 2})
    mine, other_tenant = MemoryTools(memory, "t1", spec), MemoryTools(memory, "t2", spec)

    done = await run(mine, "memory_search", {"query": "daughter's name"})
    assert done["status"] == "completed" and done["error"] is None
    assert [r["text"] for r in json.loads(done["output"])["results"]] == ["The user's daughter is called Maya."]
    out = json.loads((await run(other_tenant, "memory_search", {"query": "daughter's name"}))["output"])
    assert out["results"] == []  # the tenant is the caller's: t2 has no such namespace

    wrote = await run(mine, "memory_write", {"text": "Maya plays the violin.", "metadata": {"kind": "hobby"}})
    rid = json.loads(wrote["output"])["id"]
    assert (await memory.get("t1", rid)).user_id == "u1" and await memory.get("t2", rid) is None
    done = await run(mine, "memory_search", {"query": "violin", "top_k": 50, "filters": {"kind": "hobby"}})
    results = json.loads(done["output"])["results"]
    assert [r["id"] for r in results] == [rid]


async def test_a_write_tried_again_under_its_key_is_written_once(memory):
    spec = parse_tool({"type": "memory", "user_id": "u1"})
    tools = MemoryTools(memory, "t1", spec)
    first = await run(tools, "memory_write", {"text": "Flies to Lisbon on Friday."}, key="resp_9/2/mcp_a")
    again = await run(tools, "memory_write", {"text": "Flies to Lisbon on Friday."}, key="resp_9/2/mcp_a")
    assert first["output"] == again["output"]
    page = await memory.page("t1", "", "u1", limit=10)
    assert page is not None and len(page[0]) == 1
    other = await run(tools, "memory_write", {"text": "Flies to Lisbon on Friday."}, key="resp_9/3/mcp_b")
    assert other["output"] != first["output"]  # another call: another record
    # Deleted since (its tombstone is there): a late retry does not bring it back.
    rid = json.loads(first["output"])["id"]
    assert rid == keyed_id("t1", "resp_9/2/mcp_a") and await memory.delete("t1", rid)
    await run(tools, "memory_write", {"text": "Flies to Lisbon on Friday."}, key="resp_9/2/mcp_a")
    assert await memory.get("t1", rid) is None
    assert keyed_id("t2", "resp_9/2/mcp_a") != rid  # another tenant's key space


@pytest.mark.parametrize(
    ("name", "args", "says"),
    [
        ("memory_search", "not json", "not valid"),
        ("memory_search", {"query": " "}, "query"),
        ("memory_search", {"query": "x", "user_id": "someone-else"}, "user_id"),  # no namespace of its choosing
        ("memory_search", {"query": "x", "filters": {"a": {"regex": ".*"}}}, "unknown operator"),
        (
            "memory_search",
            {
                "query": "x",
                "filters": {"NOT": {"NOT": {"NOT": {"NOT": {"NOT": {"NOT": {"NOT": {"NOT": {"NOT": {}}}}}}}}}},
            },
            "nest",
        ),
        ("memory_search", {"query": "x", "filters": {f"k{i}": i for i in range(100)}}, "at most"),
        ("memory_search", {"query": "x", "top_k": "all of them"}, "not valid"),
        ("memory_write", {"text": "x" * 40_000}, "32768"),
        ("memory_write", {"text": "ok", "metadata": {"nested": {"a": 1}}}, "not valid"),
        ("memory_write", {"text": "ok", "agent_id": "other"}, "agent_id"),
        ("memory_write", "[" * 100_000, "not valid"),
        ("memory_write", "{" + " " * 300_000 + "}", "longer than"),
        ("memory_delete", "{}", "No memory tool"),
    ],
)
async def test_bad_calls_are_answered_to_the_model(memory, name, args, says):
    tools = MemoryTools(memory, "t1", parse_tool({"type": "memory", "user_id": "u1"}))
    done = await run(tools, name, args)
    assert done["status"] == "failed" and done["output"] is None
    assert done["error"]["type"] == "mcp_tool_execution_error"
    assert says in done["error"]["content"][0]["text"]
    assert (await memory.namespaces("t1", 1000)) == []  # nothing was written


async def test_a_search_only_run_cannot_write(memory):
    tools = MemoryTools(memory, "t1", parse_tool({"type": "memory", "allowed_tools": ["memory_search"]}))
    assert not tools.offers("memory_write")
    done = await run(tools, "memory_write", {"text": "x"})
    assert done["status"] == "failed" and (await memory.namespaces("t1", 1000)) == []
