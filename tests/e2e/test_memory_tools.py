"""Memory tools in the Responses API end to end: the real gateway (SQLite, local KMS, audit, two
tenants) in front of an OpenAI-compatible simulator whose model follows a script in the user's
message (`call <function> <arguments>` lines), driven with the official openai SDK. The model writes
a fact with `memory_write` and finds it with `memory_search`: the record is in `/v1/memory` (read
back with GET), the search result is in the next model step's request (the simulator's log), the
calls are `mcp_call` items of server label `memory` that the SDK parses, streamed with the MCP
items' events. Another tenant's run never sees the record; hostile arguments are answered to the
model as failed calls and the run completes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from builders import audit, database, identity, simulated, single
from multihome.crypto import init_key_file
from multihome.storage.engine import create_engine
from pg import stored_bytes

from .helpers import tenant_with_key
from .processes import Gateway, Simulator
from .stores import head_database

ADMIN_KEY = "mh-memory-tools-admin"
SECRETS = {"MH_MT_ADMIN_KEY": ADMIN_KEY}
NS = {"agent_id": "concierge", "user_id": "user-42"}
MEMORY = {"type": "memory", **NS}


class World:
    def __init__(self, gateway: Gateway, sim: Simulator, audit_dir: Path, db: str) -> None:
        self.gateway, self.sim, self.audit_dir, self.db = gateway, sim, audit_dir, db
        admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        self.keys: dict[str, str] = {}
        self.tenants: dict[str, str] = {}
        for name in ("acme", "globex"):
            self.tenants[name], self.keys[name] = tenant_with_key(admin, name)
        admin.close()

    def sdk(self, who: str = "acme") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=self.keys[who], max_retries=0, timeout=30)

    def sent(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.sim.requests()]

    def agent_steps(self, run_id: str) -> list[dict]:
        events = [
            json.loads(line)
            for path in self.audit_dir.glob("chn_*.jsonl")
            if not path.name.endswith(".checkpoints.jsonl")
            for line in path.read_text().splitlines()
        ]
        return [e["body"] for e in events if e["kind"] == "agent_step" and e["body"]["run_id"] == run_id]


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("memory-tools")
    init_key_file(tmp / "kms.key")
    sim = Simulator("openai", "memory-tools")
    gateway = None
    db = head_database(request, "sqlite", tmp)
    try:
        cfg = single(  # one model group "gpt" on the simulator; a database, a KMS and the audit trail
            simulated("openai", sim.url),
            model="gpt-mt",
            names=("oa", "oa", "gpt"),
            storage=database(db),
            kms={"local": {"key_file": str(tmp / "kms.key")}},
            identity=identity("MH_MT_ADMIN_KEY"),
            audit=audit(tmp / "audit"),
        )
        gateway = Gateway(cfg, tmp, SECRETS)
        yield World(gateway, sim, tmp / "audit", db)
    finally:
        log = gateway.stop() if gateway is not None else ""
        sim.stop()
        assert "Traceback" not in log, log[-3000:]


def script(*calls: tuple[str, Any]) -> str:
    """The user's message: one `call` line per tool call the simulated model makes, in order."""
    return "\n".join(f"call {name} {args if isinstance(args, str) else json.dumps(args)}" for name, args in calls)


def records(client: openai.OpenAI, **ns: str) -> list[dict]:
    return client.get("/memory/records", cast_to=object, options={"params": {**NS, **ns, "limit": 100}})["data"]


def test_the_model_writes_a_fact_then_finds_it(world):
    client = world.sdk()
    sent_before = len(world.sent())
    fact = {"text": "Allergic to peanuts; no satay.", "metadata": {"kind": "health"}}
    raw = client.responses.with_raw_response.create(
        model="gpt",
        input=script(("memory_write", fact), ("memory_search", {"query": "what can't the user eat?"})),
        tools=[MEMORY],
    )
    Response.model_validate(json.loads(raw.text))  # strictly what the SDK's types say, not just parseable
    resp = raw.parse()
    assert resp.status == "completed", resp
    assert [i.type for i in resp.output] == ["mcp_call", "mcp_call", "message"]
    wrote, searched = resp.output[0], resp.output[1]
    assert (wrote.server_label, wrote.name, wrote.status, wrote.error) == ("memory", "memory_write", "completed", None)
    rid = json.loads(wrote.output)["id"]
    results = json.loads(searched.output)["results"]
    assert results[0]["id"] == rid and results[0]["text"] == fact["text"]
    # The response's tools show the memory tool as the mcp tool its items name.
    assert resp.tools[0].type == "mcp" and resp.tools[0].server_label == "memory"
    assert resp.tools[0].allowed_tools == ["memory_search", "memory_write"]

    # The record is in /v1/memory, in the request's namespace, read back with GET.
    got = client.get(f"/memory/records/{rid}", cast_to=object)
    assert (got["agent_id"], got["user_id"], got["text"], got["metadata"]) == (
        "concierge",
        "user-42",
        fact["text"],
        fact["metadata"],
    )
    # Three model steps; the model was offered the two tools by name, and the search result reached
    # the third step as the answer to its call.
    bodies = world.sent()[sent_before:]
    assert len(bodies) == 3
    assert [t["function"]["name"] for t in bodies[0]["tools"]] == ["memory_search", "memory_write"]
    last = bodies[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "assistant", "tool"]
    assert last[3]["tool_calls"][0]["function"]["name"] == "memory_search"
    assert json.loads(last[4]["content"])["results"][0]["text"] == fact["text"]
    assert "Allergic to peanuts" in resp.output[2].content[0].text

    # Each call is an agent_step audit event, with its idempotency key and the hashes of what went in and out.
    steps = world.agent_steps(resp.id)
    tools = [s["detail"] for s in steps if s["action"] == "tool_call"]
    assert [(t["server"], t["tool"], t["status"]) for t in tools] == [
        ("memory", "memory_write", "completed"),
        ("memory", "memory_search", "completed"),
    ]
    assert all(t["idempotency_key"].startswith(resp.id) and "arguments_sha256" in t for t in tools)
    assert [s["action"] for s in steps].count("model_call") == 3

    # The next turn (previous_response_id) replays the calls to the model under the tools' own names.
    two = client.responses.create(model="gpt", input="thanks", previous_response_id=resp.id, tools=[MEMORY])
    assert two.status == "completed"
    names = [c["function"]["name"] for m in world.sent()[-1]["messages"] for c in m.get("tool_calls") or ()]
    assert names[:2] == ["memory_write", "memory_search"]  # (then the model searched again, unscripted)


def test_streamed_calls_have_the_mcp_items_events(world):
    client = world.sdk()
    text = script(("memory_write", {"text": "Prefers the window seat."}), ("memory_search", {"query": "seat"}))
    with client.responses.stream(model="gpt", input=text, tools=[MEMORY]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.status == "completed" and [i.type for i in final.output] == ["mcp_call", "mcp_call", "message"]
    for index, item in enumerate(final.output[:2]):
        mine = [e.type for e in events if getattr(e, "output_index", None) == index]
        assert mine[0] == "response.output_item.added" and mine[1] == "response.mcp_call.in_progress"
        assert "response.mcp_call_arguments.delta" in mine
        assert mine[-3:] == [
            "response.mcp_call_arguments.done",
            "response.mcp_call.completed",
            "response.output_item.done",
        ]
        done = [e for e in events if e.type == "response.output_item.done" and e.output_index == index][0]
        assert done.item.type == "mcp_call" and done.item.output == item.output and done.item.server_label == "memory"


def test_another_tenant_never_sees_the_records(world):
    acme, globex = world.sdk(), world.sdk("globex")
    secret = "The launch code word is heliotrope."
    mine = acme.responses.create(model="gpt", input=script(("memory_write", {"text": secret})), tools=[MEMORY])
    rid = json.loads(mine.output[0].output)["id"]
    # globex runs the same namespace names: its own, empty memory; acme's record is not found.
    theirs = globex.responses.create(
        model="gpt", input=script(("memory_search", {"query": "launch code word"})), tools=[MEMORY]
    )
    assert theirs.status == "completed" and json.loads(theirs.output[0].output) == {"results": []}
    assert "heliotrope" not in json.dumps([b["messages"] for b in world.sent()[-2:]])
    with pytest.raises(openai.NotFoundError):
        globex.get(f"/memory/records/{rid}", cast_to=object)
    assert records(globex) == []
    # Nor can globex continue acme's response to reach its context.
    with pytest.raises(openai.BadRequestError):
        globex.responses.create(model="gpt", input="again", previous_response_id=mine.id, tools=[MEMORY])
    assert any(r["id"] == rid for r in records(acme))


def test_hostile_arguments_are_answered_to_the_model(world):
    client = world.sdk()
    before = {r["id"] for r in records(client)}
    bad = [
        ("memory_write", "{not json"),
        ("memory_search", {"query": "anything", "user_id": "someone-else"}),  # a namespace of its choosing
        ("memory_write", {"text": "planted", "agent_id": "other-agent"}),
        ("memory_search", {"query": "x", "filters": {"a": {"$where": "1"}}}),
        ("memory_search", {"query": "x", "filters": "DROP TABLE memory_records"}),
        ("memory_write", {"text": "ok", "metadata": {"deep": {"er": [1]}}}),
        ("memory_write", {"text": "ok", "metadata": {"big": 2**64}}),  # JSON has no bound; storage has
    ]
    huge = [  # too big for the simulator's request log: only the response is checked
        ("memory_write", {"text": "x" * 40_000}),
        ("memory_search", {"query": "x", "filters": {f"k{i}": {"in": list(range(50))} for i in range(200)}}),
        ("memory_search", "[" * 50_000),
    ]
    for calls, logged in ((bad, True), (huge, False)):
        resp = client.responses.create(model="gpt", input=script(*calls), tools=[MEMORY])
        assert resp.status == "completed", resp
        made = resp.output[:-1]
        assert [c.type for c in made] == ["mcp_call"] * len(calls) and resp.output[-1].type == "message"
        assert all(
            c.status == "failed" and c.output is None and c.error.type == "mcp_tool_execution_error" for c in made
        )
        says = [c.error.content[0]["text"] for c in made]
        if logged:
            assert "not valid" in says[0] and "user_id" in says[1] and "agent_id" in says[2] and "$where" in says[3]
            # Each error reached the model as its call's result.
            tool_messages = [m["content"] for m in world.sent()[-1]["messages"] if m["role"] == "tool"]
            assert len(tool_messages) == len(bad) and all("[MCP tool error]" in t for t in tool_messages)
        else:
            assert "32768" in says[0] and "at most" in says[1] and "not valid" in says[2]
    assert {r["id"] for r in records(client)} == before  # nothing was written
    assert records(client, agent_id="other-agent") == [] and records(client, user_id="someone-else") == []


def test_a_call_of_a_memory_tool_the_request_left_out_is_a_failed_call(world):
    # docs/memory.md: a tool the request did not allow is a failed mcp_call the model reads, not a
    # function_call handed to a client that never declared it.
    client = world.sdk()
    before = {r["id"] for r in records(client)}
    read_only = {**MEMORY, "allowed_tools": ["memory_search"]}
    resp = client.responses.create(model="gpt", input=script(("memory_write", {"text": "x"})), tools=[read_only])
    assert resp.status == "completed" and [i.type for i in resp.output] == ["mcp_call", "message"], resp.output
    call = resp.output[0]
    assert call.server_label == "memory" and call.status == "failed" and call.error.type == "mcp_tool_execution_error"
    assert "memory_write" in call.error.content[0]["text"]
    assert {r["id"] for r in records(client)} == before
    # A client's own function of that name is the client's to run.
    own = {"type": "function", "name": "memory_write", "parameters": {"type": "object", "properties": {}}}
    resp = client.responses.create(model="gpt", input=script(("memory_write", {"text": "x"})), tools=[read_only, own])
    assert [(i.type, i.name) for i in resp.output] == [("function_call", "memory_write")]


def test_memory_calls_count_against_the_tool_limit(world):
    client = world.sdk()
    text = script(*[("memory_search", {"query": f"q{i}"}) for i in range(4)])
    resp = client.responses.create(model="gpt", input=text, tools=[MEMORY], max_tool_calls=2)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.incomplete_details.multihome == {"limit": "max_tool_calls"}
    assert [i.type for i in resp.output] == ["mcp_call", "mcp_call"]


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([{**MEMORY, "user": "typo"}], "tools[0].user"),
        ([MEMORY, {"type": "memory"}], "tools[1]"),
        ([{**MEMORY, "allowed_tools": ["memory_forget"]}], "tools[0].allowed_tools"),
        ([MEMORY, {"type": "function", "name": "memory_search", "parameters": {"type": "object"}}], "tools"),
        ([{"type": "mcp", "server_label": "memory", "server_url": "http://127.0.0.1:9/mcp"}], "tools[0].server_label"),
    ],
)
def test_a_bad_memory_tool_is_a_400(world, tools, param):
    with pytest.raises(openai.BadRequestError) as err:
        world.sdk().responses.create(model="gpt", input="hi", tools=tools)
    assert err.value.param == param, err.value.body


def test_what_the_model_writes_is_sealed(world):
    mark = "PLAINTEXT-MARKER-memory-tools-91c2"
    resp = world.sdk().responses.create(
        model="gpt",
        input=script(("memory_write", {"text": f"{mark} is the door code.", "metadata": {"m": mark}})),
        tools=[MEMORY],
    )
    assert resp.output[0].status == "completed"

    async def dump() -> bytes:
        return await stored_bytes(create_engine(world.db), world.db)

    # Neither the record nor the stored response (whose mcp_call holds the arguments) is in clear.
    assert mark.encode() not in asyncio.run(dump())
