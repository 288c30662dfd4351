"""MCP tools in the Responses API end to end: the real gateway (SQLite storage, local KMS, two tenants)
in front of an OpenAI-compatible and an Anthropic simulator, a real MCP server built with the `mcp`
SDK (tests/mcp_server.py), driven with the official openai SDK. The simulators' `steps=N` makes the
model call one tool per step, N times, then answer; the MCP server's own log says what ran."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from .helpers import until
from .mcp_world import ADMIN_KEY, mcp, start_world


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    yield from start_world(request, tmp_path_factory)


def test_a_three_step_task_completes(world):
    before = len(world.server.calls)
    sent_before = len(world.sims["oa"].requests())
    raw = world.sdk().responses.with_raw_response.create(
        model="gpt", input="steps=3: add, echo, then record", tools=[mcp(world)]
    )
    assert raw.headers["x-multihome-deployment"] == "oa"
    resp = raw.parse()
    assert resp.status == "completed", resp
    kinds = [item.type for item in resp.output]
    assert kinds == ["mcp_list_tools", "mcp_call", "mcp_call", "mcp_call", "message"], kinds
    listed = resp.output[0]
    assert listed.server_label == "tools" and [t.name for t in listed.tools] == ["add", "echo", "record"]
    calls = resp.output[1:4]
    assert [c.name for c in calls] == ["add", "echo", "record"]
    assert all(c.server_label == "tools" and c.error is None and c.output for c in calls)
    assert json.loads(calls[0].output) == {"sum": 2}  # the simulator's example arguments: a=1, b=1
    assert world.server.calls[before:] == [("record", {"note": "example"})]  # the side effect ran once
    # Four model steps, each with the whole context so far; the last saw all three results.
    bodies = world.sent("oa")[sent_before:]
    assert len(bodies) == 4
    last = bodies[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool"]
    assert {t["function"]["name"] for t in bodies[0]["tools"]} == {"tools__add", "tools__echo", "tools__record"}
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
    again = world.sdk().responses.retrieve(resp.id)
    assert [i.type for i in again.output] == kinds and again.output[3].output == calls[2].output
    assert "headers" not in json.dumps(again.tools[0].model_dump()) or again.tools[0].headers is None

    # The conversation goes on by previous_response_id: the listing is reused, not fetched again.
    requests_before = len(world.server.requests)
    two = world.sdk().responses.create(
        model="gpt", input="and what did that give?", previous_response_id=resp.id, tools=[mcp(world)]
    )
    assert two.status == "completed" and [i.type for i in two.output] == ["mcp_call", "message"]
    listing = [r for r in world.server.requests[requests_before:] if r.get("content-length")]
    assert listing, "the call itself reached the server"
    messages = world.sent("oa")[-1]["messages"]
    assert sum(1 for m in messages if m["role"] == "tool") == 4  # the first turn's three pairs, and this one's


def test_streamed_on_anthropic(world):
    before = len(world.sims["an"].requests())
    with world.sdk().responses.stream(model="claude", input="steps=2 please", tools=[mcp(world)]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    for kind in ("response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed"):
        assert types.count(kind) == 1
    assert types.count("response.mcp_call.in_progress") == 2 and types.count("response.mcp_call.completed") == 2
    assert "response.mcp_call_arguments.delta" in types and "response.output_text.delta" in types
    # Claude says a few words before each tool call: messages between the calls
    calls = [i for i in final.output if i.type != "message"]
    assert [i.type for i in calls] == ["mcp_list_tools", "mcp_call", "mcp_call"] and final.output[-1].type == "message"
    assert all(i.output for i in calls[1:])
    assert len(world.sims["an"].requests()) - before == 3  # three model steps, all on Anthropic
    done = [e for e in events if e.type == "response.output_item.done"]
    assert [e.output_index for e in done] == list(range(len(final.output)))
    kept = world.sdk().responses.retrieve(final.id).output
    assert [(i.id, i.type) for i in kept] == [(i.id, i.type) for i in final.output]
    assert [getattr(i, "output", None) for i in kept] == [getattr(i, "output", None) for i in final.output]


def test_approval_stops_and_continues_after_approval(world):
    before = len(world.server.calls)
    tool = mcp(world, "guarded", allowed_tools=["record"])
    first = world.sdk().responses.create(model="gpt", input="steps=1 record it", tools=[tool])
    assert first.status == "completed"
    assert [i.type for i in first.output] == ["mcp_list_tools", "mcp_approval_request"]
    asked = first.output[1]
    assert asked.name == "record" and asked.server_label == "guarded" and json.loads(asked.arguments)
    assert len(world.server.calls) == before  # nothing ran without the approval

    approved = world.sdk().responses.create(
        model="gpt",
        previous_response_id=first.id,
        tools=[tool],
        input=[{"type": "mcp_approval_response", "approval_request_id": asked.id, "approve": True}],
    )
    assert approved.status == "completed", approved
    assert [i.type for i in approved.output] == ["mcp_call", "message"]
    call = approved.output[0]
    assert call.approval_request_id == asked.id and json.loads(call.output) == {"result": "recorded example"}
    assert world.server.calls[before:] == [("record", {"note": "example"})]

    # A refusal: nothing runs, and the model is told so.
    first = world.sdk().responses.create(model="gpt", input="steps=1 record again", tools=[tool])
    asked = first.output[-1]
    refused = world.sdk().responses.create(
        model="gpt",
        previous_response_id=first.id,
        tools=[tool],
        input=[{"type": "mcp_approval_response", "approval_request_id": asked.id, "approve": False, "reason": "no"}],
    )
    assert [i.type for i in refused.output] == ["message"]
    assert len(world.server.calls) == before + 1
    assert "did not approve" in json.dumps(world.sent("oa")[-1]["messages"])


def test_streamed_approval_request(world):
    tool = mcp(world, "guarded", allowed_tools=["record"])
    with world.sdk().responses.stream(model="gpt", input="steps=1 go", tools=[tool]) as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    assert final.output[-1].type == "mcp_approval_request"
    assert "response.mcp_call.in_progress" not in types and types[-1] == "response.completed"


def test_an_unregistered_url_is_refused(world):
    before = len(world.sims["oa"].requests())
    for url in ("http://169.254.169.254/latest/meta-data", world.server.url.replace("/mcp", "/other")):
        with pytest.raises(openai.BadRequestError) as err:
            world.sdk().responses.create(
                model="gpt", input="steps=1", tools=[{"type": "mcp", "server_label": "x", "server_url": url}]
            )
        assert err.value.code == "mcp_server_not_registered" and err.value.param == "tools[0].server_url"
        assert url in err.value.message
    assert len(world.sims["oa"].requests()) == before  # refused before any model call


def test_a_tenant_cannot_use_another_tenants_server(world):
    requests = len(world.server.requests)
    for tool in (mcp(world), {"type": "mcp", "server_label": "tools"}):
        with pytest.raises(openai.BadRequestError) as err:
            world.sdk("globex").responses.create(model="gpt", input="steps=1", tools=[tool])
        assert err.value.code == "mcp_server_not_registered"
    assert len(world.server.requests) == requests  # the server was never reached for globex


def test_a_failing_tool_is_read_by_the_model(world):
    admin = httpx.Client(base_url=world.gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    resp = admin.patch(
        f"/admin/v1/tenants/{world.tenants['acme']}/mcp-servers/tools",
        json={"allowed_tools": ["add", "echo", "record", "fail"]},
    )
    assert resp.status_code == 200, resp.text
    try:
        out = world.sdk().responses.create(
            model="gpt", input="steps=1", tools=[mcp(world, allowed_tools=["fail"])], max_tool_calls=5
        )
    finally:
        admin.patch(
            f"/admin/v1/tenants/{world.tenants['acme']}/mcp-servers/tools",
            json={"allowed_tools": ["add", "echo", "record"]},
        )
        admin.close()
    call = out.output[1]
    assert call.type == "mcp_call" and call.output is None and call.error is not None
    assert "failed on purpose" in json.dumps(
        call.error.model_dump() if hasattr(call.error, "model_dump") else call.error
    )
    assert out.output[-1].type == "message" and "failed on purpose" in out.output_text


def test_the_step_limit(world):
    out = world.sdk().responses.create(model="gpt", input="steps=50", tools=[mcp(world)], max_tool_calls=2)
    assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens"
    assert out.incomplete_details.multihome == {"limit": "max_tool_calls"}
    assert [i.type for i in out.output] == ["mcp_list_tools", "mcp_call", "mcp_call"]


def test_approval_in_a_conversation_and_the_items_it_keeps(world):
    client, before = world.sdk(), len(world.server.calls)
    tool = mcp(world, "guarded", allowed_tools=["record"])
    conv = client.conversations.create()
    first = client.responses.create(
        model="claude", input="steps=1 in a conversation", tools=[tool], conversation=conv.id
    )
    asked = first.output[-1]
    assert asked.type == "mcp_approval_request"
    answer = {"type": "mcp_approval_response", "approval_request_id": asked.id, "approve": True}
    second = client.responses.create(model="gpt", conversation=conv.id, tools=[tool], input=[answer])
    assert [i.type for i in second.output] == ["mcp_call", "message"] and second.output[
        0
    ].approval_request_id == asked.id
    assert len(world.server.calls) == before + 1
    # The same answer again: the approved call is in the conversation, so it does not run twice.
    third = client.responses.create(model="gpt", conversation=conv.id, tools=[tool], input=[answer])
    assert "mcp_call" not in [i.type for i in third.output] and len(world.server.calls) == before + 1
    kinds = [i.type for i in client.conversations.items.list(conv.id, order="asc").data]
    tools_items = [k for k in kinds if k != "message"]  # Claude says a few words before its call
    assert tools_items[:4] == ["mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "mcp_call"]
    # The call carried its idempotency key (`_meta`): this response's id, its step, the call's id.
    logged = [json.loads(line) for line in world.server_log.read_text().splitlines()]
    assert logged[-1]["key"] == f"{second.id}/0/{second.output[0].id}"


def test_an_approval_for_nothing_asked_is_refused(world):
    for background in (False, True):  # a background run too: a 400 at the create (was a queued run that failed)
        with pytest.raises(openai.BadRequestError) as err:
            world.sdk().responses.create(
                model="gpt",
                tools=[mcp(world)],
                input=[{"type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": True}],
                background=background,
            )
        assert err.value.param == "input[0].approval_request_id"


def test_one_approval_request_answered_twice_is_refused_and_nothing_runs(world):
    """Was: each approving copy ran the call (a side effect done twice on one approval)."""
    tool = mcp(world, "guarded", allowed_tools=["record"])
    client = world.sdk()
    first = client.responses.create(model="gpt", input="steps=1 record it", tools=[tool])
    asked = first.output[-1]
    before = len(world.server.calls)
    yes = {"type": "mcp_approval_response", "approval_request_id": asked.id, "approve": True}
    for answers in ([yes, yes], [yes, {**yes, "approve": False}]):
        for background in (False, True):
            with pytest.raises(openai.BadRequestError) as err:
                client.responses.create(
                    model="gpt", previous_response_id=first.id, tools=[tool], input=answers, background=background
                )
            assert err.value.param == "input[1].approval_request_id" and err.value.code == "duplicate_approval_response"
    with pytest.raises(openai.BadRequestError) as err:  # without the mcp tool (was a 200 that ignored it)
        client.responses.create(model="gpt", previous_response_id=first.id, input=[yes])
    assert err.value.param == "tools"
    assert len(world.server.calls) == before
    done = client.responses.create(model="gpt", previous_response_id=first.id, tools=[tool], input=[yes])
    assert [i.type for i in done.output] == ["mcp_call", "message"] and len(world.server.calls) == before + 1


def test_a_stateless_client_replaying_an_approved_call_does_not_run_it_again(world):
    """A client without stored state (store: false) sends its history back each turn: the approval request,
    its approval and the call it led to. Was: the call ran again at every later turn (a side effect repeated)."""
    tool = mcp(world, "guarded", allowed_tools=["record"])
    client = world.sdk()
    first = client.responses.create(model="gpt", input="steps=1 record it", tools=[tool], store=False)
    asked = first.output[-1]
    history = [{"role": "user", "content": "steps=1 record it"}, *[i.model_dump() for i in first.output]]
    history.append({"type": "mcp_approval_response", "approval_request_id": asked.id, "approve": True})
    before = len(world.server.calls)
    second = client.responses.create(model="gpt", input=history, tools=[tool], store=False)
    assert [i.type for i in second.output] == ["mcp_call", "message"] and len(world.server.calls) == before + 1
    history += [i.model_dump() for i in second.output] + [{"role": "user", "content": "thanks"}]
    third = client.responses.create(model="gpt", input=history, tools=[tool], store=False)
    assert "mcp_call" not in [i.type for i in third.output] and len(world.server.calls) == before + 1
    without = client.responses.create(model="gpt", input=history, store=False)  # acted on: needs no mcp tool
    assert without.status == "completed" and len(world.server.calls) == before + 1


def test_each_step_is_routed_on_its_own_so_a_run_fails_over_mid_way(world):
    """The first step is served by `first`; while its tool runs, `first` starts failing (503): the next
    steps go to Anthropic, which is sent the whole context, the first step's call and result included."""
    first, an = world.sims["first"], world.sims["an"]
    sent_first, sent_an = len(first.requests()), len(an.requests())
    logged = len(world.server_log.read_text().splitlines()) if world.server_log.exists() else 0

    def break_first_when_the_tool_runs() -> None:
        until(lambda: len(world.server_log.read_text().splitlines()) > logged, timeout=30, what="the slow tool")
        first.fault(status=503)

    watcher = threading.Thread(target=break_first_when_the_tool_runs)
    watcher.start()
    try:
        resp = world.sdk().responses.create(
            model="failover", input="steps=2 then fail over", tools=[mcp(world, "sleepy")]
        )
    finally:
        watcher.join(30)
        first.clear_faults()
    assert resp.status == "completed", resp
    calls = [i for i in resp.output if i.type == "mcp_call"]
    assert len(calls) == 2 and all(c.output for c in calls)
    assert len(first.requests()) - sent_first == 3  # step 1; steps 2 and 3 each tried there first and declined (503)
    assert len(an.requests()) - sent_an == 2  # steps 2 and 3
    context = json.dumps(world.sent("an")[-2])
    assert calls[0].id in context and "slept" in context  # the first step's call and its result


def test_parallel_calls_in_one_step_each_run_with_their_result(world):
    with world.sdk().responses.stream(model="gpt", input="do these in parallel", tools=[mcp(world)]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [i.type for i in final.output] == ["mcp_list_tools", "mcp_call", "mcp_call", "mcp_call", "message"]
    assert [i.name for i in final.output[1:4]] == ["add", "echo", "record"] and all(i.output for i in final.output[1:4])
    done = [(e.output_index, e.item.id) for e in events if e.type == "response.output_item.done"]
    assert done == [(n, item.id) for n, item in enumerate(final.output)]
    messages = world.sent("oa")[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool"]


def test_a_model_calling_a_tool_the_run_does_not_offer_gets_a_failed_call_and_nothing_runs(world):
    """The request allows `add` only; the model calls the server's `record` anyway (as a model may: the
    simulator's scripted calls). It was handed to the client as a function_call of a function it never
    declared, the response ending there; now it is a failed mcp_call the model reads, the server is never
    asked, and the run goes on. A function of the client's own that reads like one stays the client's."""
    before, requests = len(world.server.calls), len(world.server.requests)
    script = 'call tools__record {"note": "not allowed"}\ncall tools__add {"a": 2, "b": 3}'
    out = world.sdk().responses.create(model="gpt", input=script, tools=[mcp(world, allowed_tools=["add"])])
    assert out.status == "completed", out
    assert [i.type for i in out.output] == ["mcp_list_tools", "mcp_call", "mcp_call", "message"], out.output
    refused, added = out.output[1], out.output[2]
    assert (refused.server_label, refused.name, refused.status, refused.output) == ("tools", "record", "failed", None)
    error = json.dumps(refused.error.model_dump())
    assert "not offered" in error and "call was not made" in error
    assert added.name == "add" and json.loads(added.output) == {"sum": 5}
    assert world.server.calls[before:] == []  # `record`, the side effect, never ran
    called = [r for r in world.server.requests[requests:] if r.get("content-length")]
    assert called, "the allowed call reached the server"

    own = {"type": "function", "name": "tools__record", "parameters": {"type": "object", "properties": {}}}
    out = world.sdk().responses.create(
        model="gpt", input="call tools__record {}", tools=[mcp(world, allowed_tools=["add"]), own]
    )
    assert [i.type for i in out.output] == ["mcp_list_tools", "function_call"]
    assert out.output[1].name == "tools__record"


def test_an_offered_tool_called_by_its_mcp_name_still_waits_for_approval(world):
    """`weather.get-current` is offered as a function with a hash (a dot is no function name's); a model that
    calls it by its MCP name is read as a call of that tool, and it needs approval on `guarded` as any call
    of it does: asked, not run."""
    admin = httpx.Client(base_url=world.gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    path = f"/admin/v1/tenants/{world.tenants['acme']}/mcp-servers/guarded"
    assert admin.patch(path, json={"allowed_tools": ["weather.get-current"]}).status_code == 200
    requests = len(world.server.requests)
    try:
        out = world.sdk().responses.create(
            model="gpt", input='call guarded__weather.get-current {"city": "Oslo"}', tools=[mcp(world, "guarded")]
        )
    finally:
        admin.patch(path, json={"allowed_tools": ["add", "echo", "record"]})
        admin.close()
    assert [i.type for i in out.output] == ["mcp_list_tools", "mcp_approval_request"], out.output
    assert out.output[1].name == "weather.get-current"
    calls = [r for r in world.server.requests[requests:] if r.get("content-length")]
    assert len(calls) <= 3, calls  # the handshake and the listing only (initialize, initialized, tools/list)


def test_the_worked_example_of_docs_agents_runs_as_written(world, capsys):
    # The page's code block, executed as it stands, with what it takes from around it: a client, a
    # customer id, `time`, and `crm` registered for the tenant with no approval (as the page says).
    page = (Path(__file__).parents[2] / "docs" / "agents.md").read_text()
    code = page.split("### A worked example agent", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    admin = httpx.Client(base_url=world.gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    body = {"name": "crm", "url": world.server.url, "allowed_tools": ["add", "echo"], "require_approval": "never"}
    assert admin.post(f"/admin/v1/tenants/{world.tenants['acme']}/mcp-servers", json=body).status_code == 201
    admin.close()
    exec(code, {"client": world.sdk(), "customer_id": "cust-7", "time": time})
    printed = [line.split() for line in capsys.readouterr().out.splitlines()]
    # The simulated model calls the first tool offered (crm's), then answers.
    assert printed == [["mcp_list_tools", "crm"], ["mcp_call", "crm", "add"], ["message"]], printed
