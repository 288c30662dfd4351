"""Durable agent runs end to end: a background response with an `mcp` tool runs on the job queue,
checkpointed after every model step and every tool call. kill -9 of the gateway in the middle of a
five-step run: a restarted gateway on the same database picks the run up and finishes it, and the
MCP test server's call log, the simulator's request log and the usage rows show that no completed
step ran twice and no completed model call was billed twice. Driven with the official openai SDK."""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import closing
from pathlib import Path

import httpx
import openai
import pytest

from builders import audit, breakers, config, database, deployment, groups, identity, price, simulated
from mcp_server import McpTestServer
from multihome.crypto import init_key_file

from .helpers import stale_for, tenant_with_key, until
from .processes import Gateway, Simulator, local_http

ADMIN_KEY = "mh-agent-runs-admin"
SECRETS = {"MH_AR_ADMIN_KEY": ADMIN_KEY, "MH_AR_REPLICA": "gateway-a"}
# A long lease: a restarted replica takes its dead incarnation's run back at once by its replica id.
FAST = {"background": {"lease_s": 30.0, "poll_s": 0.1, "event_flush_ms": 50, "replica_id_env": "MH_AR_REPLICA"}}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def admin(gateway: Gateway) -> httpx.Client:
    # 60 s: a replica loading the MCP SDK at its first tool call holds its loop for seconds on a busy machine.
    return local_http(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)


def setup_tenant(gateway: Gateway, server: McpTestServer, name: str = "acme") -> tuple[str, str]:
    with admin(gateway) as client:
        tenant, key = tenant_with_key(client, name)
        body = {"name": "tools", "url": server.url, "allowed_tools": ["record", "slow"], "require_approval": "never"}
        resp = client.post(f"/admin/v1/tenants/{tenant}/mcp-servers", json=body)
        assert resp.status_code == 201, resp.text
    return tenant, key


def run_job(gateway: Gateway, tenant: str, run_id: str) -> dict:
    with admin(gateway) as client:
        resp = client.get(f"/admin/v1/tenants/{tenant}/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()["job"]


def billed_calls(gateway: Gateway, tenant: str) -> int:
    with admin(gateway) as client:
        summary = client.get(f"/admin/v1/tenants/{tenant}/usage", params={"group_by": "model_group"}).json()
    return sum(r["calls"] for r in summary["data"] if r["model_group"] == "gpt")


@pytest.fixture(params=["sqlite", "postgresql"])
def world(tmp_path, request):
    # At the head revision already (a copy of one migrated once): what is under test is the run, not migrating.
    db = request.getfixturevalue(f"{'sqlite' if request.param == 'sqlite' else 'pg'}_database")()
    init_key_file(tmp_path / "kms.key")
    sim = Simulator("openai", "agent-runs")
    server = McpTestServer(call_log=tmp_path / "calls.jsonl").start()
    cfg = config(
        storage=database(db),
        kms={"local": {"key_file": str(tmp_path / "kms.key")}},
        identity=identity("MH_AR_ADMIN_KEY"),
        routing=breakers(0),
        audit=audit(tmp_path / "audit"),
        providers={"oa": simulated("openai", sim.url)},
        deployments={"oa": deployment("oa", "gpt-ar", price=price(1_000_000, 1_000_000))},  # $1 a token
        model_groups=groups({"gpt": "oa"}, retries=0),
        responses=FAST,
        egress={"allow_networks": ["127.0.0.0/8"]},  # the MCP test server listens on loopback
    )
    gateways: list[Gateway] = []

    def start() -> Gateway:
        gateways.append(Gateway(cfg, tmp_path, SECRETS))
        return gateways[-1]

    try:
        yield tmp_path, sim, server, start
    finally:
        logs = [gw.stop() for gw in gateways]
        sim.stop()
        server.stop()
        for log in logs:
            assert "Traceback" not in log, log[-3000:]


def test_kill_9_mid_run_resumes_from_the_last_checkpoint(world):
    tmp, sim, server, start = world
    first = start()
    tenant, key = setup_tenant(first, server)
    client = openai.OpenAI(base_url=first.url + "/v1", api_key=key, max_retries=0, timeout=30)
    tool = {"type": "mcp", "server_label": "tools", "server_url": server.url}
    created = client.responses.create(model="gpt", input="steps=5: record, wait, record", tools=[tool], background=True)
    assert created.status in ("queued", "in_progress") and created.background
    log = tmp / "calls.jsonl"
    # The tools alternate record, slow (1 s), record, slow, record: kill while the first slow call runs.
    until(lambda: any(line["tool"] == "slow" for line in lines(log)), what="the first slow call")
    os.kill(first.popen.pid, signal.SIGKILL)
    first.popen.wait(10)
    before = len(lines(log))
    assert [line["tool"] for line in lines(log)] == ["record", "slow"]
    steps_before = [r["request_id"] for r in sim.requests()]
    assert len(steps_before) == 2  # two model steps done (each checkpointed before its tool ran)

    second = start()  # the same replica id: it need not wait 30 s for the dead one's lease
    restarted = time.monotonic()
    # Picked up = claimed by the new incarnation (its second attempt). The 5 s is the promise,
    # kept by design (the dead incarnation's jobs are reclaimed at once, the queue polled every 0.1 s
    # here), not a speed measurement: measured on the replica's side (no look sent 5 s after its start
    # may still see the first attempt, allowing its own slowest answer), not by when this test noticed.
    # The first call after it (loading the MCP SDK on a busy machine can take seconds) is only waited for.
    picked_up = stale_for(lambda: run_job(second, tenant, created.id)["attempt"] == 2, restarted, what="the claim")
    assert picked_up.within(5.0), picked_up
    until(lambda: len(lines(log)) > before, timeout=60, what="the run to resume")
    client = openai.OpenAI(base_url=second.url + "/v1", api_key=key, max_retries=0, timeout=30)
    done = until(
        lambda: (r := client.responses.retrieve(created.id)).status not in ("queued", "in_progress") and r,
        what="the run to finish",
    )
    assert done.status == "completed", done
    kinds = [i.type for i in done.output]
    assert kinds == ["mcp_list_tools", *["mcp_call"] * 5, "message"], kinds
    assert [i.name for i in done.output[1:6]] == ["record", "slow", "record", "slow", "record"]
    assert all(i.output and i.error is None for i in done.output[1:6])

    # The MCP server: three records, each once (distinct keys, no repeat); the slow call that was in
    # flight at the kill was tried again under its idempotency key, the other slow call once.
    calls = lines(log)
    records = [c for c in calls if c["tool"] == "record"]
    assert len(records) == 3 and not any(c.get("repeat") for c in records)
    assert len({c["key"] for c in records}) == 3 and all(c["key"].startswith(created.id) for c in records)
    slow = [c["key"] for c in calls if c["tool"] == "slow"]
    assert len(slow) == 3 and slow[0] == slow[1] != slow[2]
    # The simulator: six model steps, each called once (none was in flight at the kill).
    steps = [r["request_id"] for r in sim.requests()]
    assert len(steps) == 6 and len(set(steps)) == 6 and steps[:2] == steps_before
    # Billed: six calls, one usage row each.
    until(lambda: billed_calls(second, tenant) >= 6, what="usage")
    time.sleep(0.5)
    assert billed_calls(second, tenant) == 6
    # Every model step and tool call is an agent_step audit event (the in-flight slow call twice).
    events = [
        json.loads(line)
        for path in (tmp / "audit").glob("chn_*.jsonl")
        if not path.name.endswith(".checkpoints.jsonl")
        for line in path.read_text().splitlines()
    ]
    agent = [e["body"] for e in events if e["kind"] == "agent_step" and e["body"]["run_id"] == created.id]
    assert [a["action"] for a in agent].count("model_call") == 6
    assert [a["action"] for a in agent].count("tool_call") == 5  # the killed call never finished
    assert all("arguments_sha256" in a["detail"] for a in agent if a["action"] == "tool_call")


def test_a_background_agent_run_streams_and_honours_its_limits(world):
    tmp, sim, server, start = world
    gateway = start()
    _, key = setup_tenant(gateway, server)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)
    tool = {"type": "mcp", "server_label": "tools", "server_url": server.url, "allowed_tools": ["record"]}
    stream = client.responses.create(model="gpt", input="steps=3", tools=[tool], background=True, stream=True)
    events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert types.count("response.mcp_call.completed") == 3 and types[-1] == "response.completed"
    final = events[-1].response
    again = list(client.responses.retrieve(final.id, stream=True, starting_after=4))
    assert [e.sequence_number for e in again] == list(range(5, len(events)))

    # A spend cap (the request's multihome extension): the run stops once it is spent.
    capped = client.responses.create(
        model="gpt",
        input="steps=9",
        tools=[tool],
        background=True,
        extra_body={"multihome": {"agent": {"max_spend": 1}}},
    )
    done = until(
        lambda: (r := client.responses.retrieve(capped.id)).status not in ("queued", "in_progress") and r,
        what="the capped run",
    )
    assert done.status == "incomplete" and done.incomplete_details.reason == "max_output_tokens"
    assert done.incomplete_details.multihome == {"limit": "max_spend"}
    assert [i.type for i in done.output] == ["mcp_list_tools", "mcp_call"]  # one step: $1 a token
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model="gpt", input="x", tools=[tool], extra_body={"multihome": {"agent": {"max_steps": 0}}}
        )
    assert err.value.param == "multihome.agent.max_steps"


def test_cancel_stops_a_background_run_between_its_steps(world):
    tmp, sim, server, start = world
    gateway = start()
    _, key = setup_tenant(gateway, server)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)
    tool = {"type": "mcp", "server_label": "tools", "server_url": server.url, "allowed_tools": ["slow"]}
    created = client.responses.create(model="gpt", input="steps=6", tools=[tool], background=True)
    log = tmp / "calls.jsonl"
    until(lambda: len(lines(log)) >= 1, what="the first slow call")
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    time.sleep(3.0)  # longer than a slow call: the run has stopped
    ran = len(lines(log))
    assert ran <= 2  # the call running at the cancel may finish; no step starts after it
    final = client.responses.retrieve(created.id)
    assert final.status == "cancelled" and final.output[0].type == "mcp_list_tools"
    assert all(i.type != "mcp_call" or i.output for i in final.output)  # never a call without its result
    time.sleep(1.5)
    assert len(lines(log)) == ran


def test_operators_see_runs_and_cancel_them_through_the_admin_api_and_the_cli(world, monkeypatch, capsys):
    tmp, sim, server, start = world
    gateway = start()
    tenant, key = setup_tenant(gateway, server)
    other, _ = setup_tenant(gateway, server, "globex")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)
    tool = {"type": "mcp", "server_label": "tools", "server_url": server.url, "allowed_tools": ["slow"]}
    secret = "steps=6 the-private-question-7f3a"
    run = client.responses.create(model="gpt", input=secret, tools=[tool], background=True)
    plain = client.responses.create(model="gpt", input="no tools", background=True)  # not an agent run
    until(lambda: len(lines(tmp / "calls.jsonl")) >= 1, what="the first slow call")
    with admin(gateway) as http:
        listed = http.get(f"/admin/v1/tenants/{tenant}/runs").json()
        assert [r["id"] for r in listed["data"]] == [run.id] and plain.id not in json.dumps(listed)
        view = listed["data"][0]
        assert view["servers"] == ["tools"] and view["status"] == "in_progress" and view["job"]["status"] == "running"
        one = http.get(f"/admin/v1/tenants/{tenant}/runs/{run.id}").json()
        assert any(s["action"] == "model_call" for s in one["steps_recorded"])
        assert secret not in json.dumps(one)  # counts, names and hashes; never content
        assert http.get(f"/admin/v1/tenants/{other}/runs/{run.id}").status_code == 404  # another tenant's: none
        assert http.get(f"/admin/v1/tenants/{tenant}/runs/{plain.id}").status_code == 404
        runs = f"/admin/v1/tenants/{tenant}/runs"
        assert http.get(runs, params={"after": run.id}).json() == {"object": "list", "data": [], "has_more": False}
        for bad in ("resp_never_issued", "resp_\x00", "r" * 5000):  # a NUL was a 500 on PostgreSQL
            resp = http.get(runs, params={"after": bad})  # not an empty page, taken for the end of the list
            assert resp.status_code == 400 and resp.json()["error"]["param"] == "after", resp.text

    from multihome.cli.main import main

    monkeypatch.setenv("MULTIHOME_URL", gateway.url)
    monkeypatch.setenv("MULTIHOME_ADMIN_KEY", ADMIN_KEY)
    assert main(["runs", "list", "--tenant", tenant]) == 0
    assert run.id in capsys.readouterr().out
    assert main(["runs", "cancel", run.id, "--tenant", tenant]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert client.responses.retrieve(run.id).status == "cancelled"
    with admin(gateway) as http:  # a finished run is still listed, with its counters
        after = http.get(f"/admin/v1/tenants/{tenant}/runs").json()["data"]
        assert [(r["id"], r["status"]) for r in after] == [(run.id, "cancelled")] and after[0]["steps"] >= 1
    events = [
        json.loads(line)
        for path in (tmp / "audit").glob("chn_*.jsonl")
        if not path.name.endswith(".checkpoints.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert any(e["kind"] == "admin_change" and e["body"].get("action") == "run.cancel" for e in events)


def test_kill_9_does_not_write_a_completed_memory_write_twice(world):
    """A run that writes memory, calls a slow MCP tool (killed there), then searches memory: the
    resumed run does not write again (the write was checkpointed), and its search finds the one record."""
    tmp, sim, server, start = world
    first = start()
    tenant, key = setup_tenant(first, server)
    client = openai.OpenAI(base_url=first.url + "/v1", api_key=key, max_retries=0, timeout=30)
    tools = [
        {"type": "mcp", "server_label": "tools", "server_url": server.url},
        {"type": "memory", "agent_id": "planner", "user_id": "u-7"},
    ]
    script = "\n".join(
        [
            'call memory_write {"text": "The offsite is in Porto in May."}',
            'call tools__slow {"seconds": 2}',
            'call memory_search {"query": "where is the offsite?"}',
        ]
    )
    created = client.responses.create(model="gpt", input=script, tools=tools, background=True)
    log = tmp / "calls.jsonl"
    until(lambda: any(line["tool"] == "slow" for line in lines(log)), what="the slow call")
    os.kill(first.popen.pid, signal.SIGKILL)
    first.popen.wait(10)
    assert len(sim.requests()) == 2  # the write's step and the slow call's step

    second = start()
    client = openai.OpenAI(base_url=second.url + "/v1", api_key=key, max_retries=0, timeout=30)
    done = until(
        lambda: (r := client.responses.retrieve(created.id)).status not in ("queued", "in_progress") and r,
        what="the run to finish",
    )
    assert done.status == "completed", done
    assert [(i.type, getattr(i, "name", None)) for i in done.output] == [
        ("mcp_list_tools", None),
        ("mcp_call", "memory_write"),
        ("mcp_call", "slow"),
        ("mcp_call", "memory_search"),
        ("message", None),
    ]
    ns = {"agent_id": "planner", "user_id": "u-7"}
    kept = client.get("/memory/records", cast_to=object, options={"params": ns})["data"]
    assert [r["text"] for r in kept] == ["The offsite is in Porto in May."]  # written once
    found = json.loads(done.output[3].output)["results"]
    assert [r["id"] for r in found] == [kept[0]["id"]]
    assert len(sim.requests()) == 4 and len({r["request_id"] for r in sim.requests()}) == 4
    events = [
        json.loads(line)
        for path in (tmp / "audit").glob("chn_*.jsonl")
        if not path.name.endswith(".checkpoints.jsonl")
        for line in path.read_text().splitlines()
    ]
    calls = [
        e["body"]["detail"]["tool"]
        for e in events
        if e["kind"] == "agent_step" and e["body"]["run_id"] == created.id and e["body"]["action"] == "tool_call"
    ]
    # Each once (the killed slow call never finished; each process writes a chain file of its own).
    assert sorted(calls) == ["memory_search", "memory_write", "slow"]


def console(gateway: Gateway, key: str) -> httpx.Client:
    """A console session (the login form's POST), as a browser holds it: the cookie."""
    http = httpx.Client(base_url=gateway.url + "/console", timeout=10)
    resp = http.post("/login", data={"key": key})
    assert resp.status_code == 303 and "set-cookie" in resp.headers, resp.text
    return http


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_the_console_state_page_shows_runs_their_steps_and_memory_namespaces_never_content(world):
    tmp, sim, server, start = world
    gateway = start()
    tenant, key = setup_tenant(gateway, server)
    other, _ = setup_tenant(gateway, server, "globex")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)
    secret = "the-private-memory-9b1c"
    ns = {"agent_id": "planner", "user_id": "u-7"}
    wrote = client.post("/memory/records", cast_to=object, body={**ns, "text": f"{secret} lives in Porto"})
    assert wrote["id"].startswith("mem_")
    tool = {"type": "mcp", "server_label": "tools", "server_url": server.url, "allowed_tools": ["record"]}
    run = client.responses.create(model="gpt", input="steps=2 the-private-question-2d4e", tools=[tool], background=True)
    done = until(
        lambda: (r := client.responses.retrieve(run.id)).status not in ("queued", "in_progress") and r,
        what="the run to finish",
    )
    assert done.status == "completed", done

    with admin(gateway) as http:
        listed = http.get(f"/admin/v1/tenants/{tenant}/memory/namespaces").json()["data"]
        assert [(n["agent_id"], n["user_id"], n["records"]) for n in listed] == [("planner", "u-7", 1)]
        assert listed[0]["bytes"] > len(secret) and listed[0]["oldest_at"] == listed[0]["newest_at"]
        assert secret not in json.dumps(listed)
        assert http.get(f"/admin/v1/tenants/{other}/memory/namespaces").json()["data"] == []
        made = http.post(f"/admin/v1/tenants/{other}/keys", json={"name": "ta", "roles": ["tenant-admin"]}).json()
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {made['key']}"}) as foreign:
        assert foreign.get(f"/admin/v1/tenants/{tenant}/memory/namespaces").status_code == 403
        assert foreign.get(f"/admin/v1/tenants/{other}/memory/namespaces").status_code == 200

    with closing(console(gateway, ADMIN_KEY)) as page:
        state = page.get("/state", params={"tenant": tenant})
        assert state.status_code == 200 and run.id in state.text and "planner" in state.text
        assert f"/console/state/runs/{run.id}?tenant={tenant}" in state.text
        detail = page.get(f"/state/runs/{run.id}", params={"tenant": tenant})
        assert detail.status_code == 200 and "model_call" in detail.text and "tool_call" in detail.text
        assert "completed" in detail.text
        for text in (state.text, detail.text):
            assert secret not in text and "the-private-question-2d4e" not in text
        assert page.get(f"/state/runs/{run.id}", params={"tenant": other}).status_code == 404  # not in that tenant
    with closing(console(gateway, made["key"])) as page:  # globex's tenant-admin, by URL
        assert page.get(f"/state/runs/{run.id}", params={"tenant": tenant}).status_code == 403
        assert page.get(f"/state/runs/{run.id}").status_code == 404  # their own tenant: no such run
        own = page.get("/state")
        assert own.status_code == 200 and run.id not in own.text and "No memory namespaces" in own.text

    # The same in a real browser (Debian's Chromium): follow the run's link to its steps; screenshots for docs/.
    from types import SimpleNamespace

    from playwright.sync_api import expect, sync_playwright

    from .test_console import CHROMIUM, login, shot

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = login(browser, SimpleNamespace(root=gateway.url), ADMIN_KEY)  # type: ignore[arg-type]
            tab.goto(f"{gateway.url}/console/state?tenant={tenant}")
            expect(tab.locator("tr.namespace")).to_contain_text("planner")
            expect(tab.locator("tr.run")).to_contain_text("completed")
            shot(tab, "state-runs", (ADMIN_KEY, key, secret))
            tab.click(f"a:has-text('{run.id}')")
            expect(tab.locator("tr.step").first).to_be_visible()
            expect(tab.locator(".run-status")).to_have_text("completed")
            shot(tab, "run", (ADMIN_KEY, key, secret))
        finally:
            browser.close()
