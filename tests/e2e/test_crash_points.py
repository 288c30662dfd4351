"""kill -9 of the real gateway at the points between two writes of the stateful runtime, then a restart
on the same database, checked with the official openai SDK.

The point is placed without a hook in the gateway: the test holds SQLite's write lock, so a run that
got its upstream answer (its usage row is in the usage spool) cannot write its checkpoint; it is killed
there. What must hold after the restart (docs/responses.md "Exactly once after a crash"): the response
completes, its conversation has the turn once and takes the next one, the turn is billed once."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from builders import audit, breakers, config, database, deployment, groups, identity, price, simulated
from mcp_server import McpTestServer
from multihome.crypto import init_key_file

from .helpers import finished, until
from .processes import Gateway, Simulator, local_http

ADMIN_KEY = "mh-crash-points-e2e-admin"
SECRETS = {"MH_CP_ADMIN_KEY": ADMIN_KEY}
FAST = {"background": {"lease_s": 2.0, "poll_s": 0.1, "event_flush_ms": 50}}
# The drain tests' deadline (`--drain-timeout`; 5 s by default): their streams run 20 s, open at it either way.
DRAIN = ("--drain-timeout", "2")
TODAY = dt.datetime.now(dt.UTC).date()
SHARE = {  # half of the metered cost accrues to the ledger: what a crash must not count twice or lose
    "id": "rs-cp",
    "parties": ["Us", "Them"],
    "rate": "0.5",
    "basis": {"providers": ["oa"]},
    "starts_on": TODAY - dt.timedelta(days=10),
    "ends_on": TODAY + dt.timedelta(days=300),
    "currency": "USD",
}


def gateway_config(tmp: Path, sim: Simulator) -> dict:
    return config(
        audit=audit(tmp / "audit"),
        storage=database(f"sqlite+aiosqlite:///{tmp}/multihome.db"),
        kms={"local": {"key_file": str(tmp / "kms.key")}},
        identity=identity("MH_CP_ADMIN_KEY"),
        routing=breakers(0),
        providers={"oa": simulated("openai", sim.url)},
        deployments={"oa": deployment("oa", "gpt-cp", price=price(1_000_000, 1_000_000))},  # $1 a token
        model_groups=groups({"gpt": "oa"}, retries=0),
        responses=FAST,
        contracts={"flush_interval_s": 0.02, "revenue_share": [SHARE]},
        egress={"allow_networks": ["127.0.0.0/8"]},  # the MCP test server listens on loopback
    )


@pytest.fixture
def world(tmp_path, sqlite_database) -> Iterator[tuple[Simulator, object]]:
    yield from _world(tmp_path, sqlite_database, FAST)


@pytest.fixture
def world_one_attempt(tmp_path, sqlite_database) -> Iterator[tuple[Simulator, object]]:
    """A job run once at most: the run a kill cuts short is not repeated."""
    yield from _world(tmp_path, sqlite_database, {"background": {**FAST["background"], "max_attempts": 1}})


def _world(tmp_path: Path, sqlite_database, responses: dict) -> Iterator[tuple[Simulator, object]]:
    sqlite_database("multihome.db")  # gateway_config's file, at the head revision: the kills are under test
    init_key_file(tmp_path / "kms.key")
    sim = Simulator("openai", "crash-points")
    cfg = gateway_config(tmp_path, sim)
    cfg["responses"] = responses
    gateways: list[Gateway] = []

    def start(*extra: str) -> Gateway:
        gateways.append(Gateway(cfg, tmp_path, SECRETS, *extra))
        return gateways[-1]

    try:
        yield sim, start
    finally:
        with contextlib.suppress(httpx.HTTPError):
            sim.clear_faults()
        logs = [(gw, gw.stop()) for gw in gateways]
        sim.stop()
        for gw, log in logs:
            # The killed one logged the store it could not write (the lock this test held), with tracebacks.
            assert gw.popen.returncode == -signal.SIGKILL or "Traceback" not in log, log[-3000:]


def admin(gateway: Gateway) -> httpx.Client:
    return local_http(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)


def tenant_key(gateway: Gateway) -> tuple[str, str]:
    """A tenant with a key and a (large) budget: its counter is what a crash must not count twice."""
    with admin(gateway) as client:
        resp = client.post("/admin/v1/tenants", json={"name": "acme"})
        assert resp.status_code == 201, resp.text
        tenant = resp.json()["id"]
        budget = {"scope": "tenant", "amount": "1000000", "period": "month", "mode": "hard"}
        resp = client.post(f"/admin/v1/tenants/{tenant}/budgets", json=budget)
        assert resp.status_code == 201, resp.text
        resp = client.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "roles": ["member"]})
        assert resp.status_code == 201, resp.text
        return tenant, resp.json()["key"]


def spent(gateway: Gateway, tenant: str) -> tuple[Decimal, Decimal]:
    """(what the tenant's budget counter holds, what its usage rows cost), once the contract ledger holds half
    of the latter (one accrual per billed call: none lost, none twice; the only tenant, the only contract)."""
    with admin(gateway) as client:

        def amounts() -> tuple[Decimal, Decimal]:
            usage = client.get(f"/admin/v1/tenants/{tenant}/usage").json()["data"]
            billed = sum((Decimal(str(r["cost"])) for r in usage), Decimal(0))
            return billed, Decimal(str(client.get("/admin/v1/contracts/rs-cp/report").json()["accrued"]))

        try:
            billed, _ = until(
                lambda: (a := amounts())[0] and a[1] == a[0] / 2 and a, what="the ledger to hold half of the bill"
            )
        except AssertionError:
            raise AssertionError(f"(billed, accrued) = {amounts()}") from None
        [budget] = [b for b in client.get(f"/admin/v1/tenants/{tenant}/budgets").json()["data"] if b["id"]]
    return Decimal(str(budget["spent_or_reserved"])), billed


def sdk(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=60)


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """SQLite's write lock held by this process: the gateway's writes wait (reads go on: WAL)."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def spooled(tmp: Path, request_id: str) -> bool:
    """Whether a usage row of `request_id` is in a spool file (the call was answered and metered)."""
    return any(request_id.encode() in p.read_bytes() for p in (tmp / "usage-spool").glob("*.spool"))


def calls_of(sim: Simulator, text: str) -> list[dict]:
    return [r for r in sim.requests() if text in r["body"]]


def usage_rows(tmp: Path, request_id: str) -> int:
    with sqlite3.connect(tmp / "multihome.db", timeout=60) as db:
        return db.execute("SELECT count(*) FROM usage_calls WHERE request_id = ?", (request_id,)).fetchone()[0]


def items_text(client: openai.OpenAI, conversation: str) -> list[str]:
    out = []
    for item in client.conversations.items.list(conversation, limit=100, order="asc"):
        for part in getattr(item, "content", None) or []:
            out.append(getattr(part, "text", ""))
    return out


@pytest.mark.parametrize("stream", [False, True])
def test_kill_between_the_upstream_answer_and_the_append_of_a_background_turn(world, tmp_path, stream):
    sim, start = world
    first = start()
    tenant, key = tenant_key(first)
    client = sdk(first, key)
    conv = client.conversations.create()
    client.responses.create(model="gpt", input="an earlier turn", conversation=conv.id)
    sim.fault(chunk_delay_ms=100, chunks=30)  # about three seconds of streaming: the lock is taken meanwhile
    text = f"answered then killed {stream}"
    created = client.responses.create(model="gpt", input=text, conversation=conv.id, background=True, stream=stream)
    if stream:
        response_id = next(iter(created)).response.id
        created.close()
    else:
        response_id = created.id
    until(lambda: calls_of(sim, text), what="the upstream call")
    request_id = calls_of(sim, text)[0]["request_id"]
    with write_lock(tmp_path / "multihome.db"):
        assert client.responses.retrieve(response_id).status == "in_progress", "finished before the lock: missed"
        until(lambda: spooled(tmp_path, request_id), what="the answer metered (in the spool)")
        os.kill(first.popen.pid, signal.SIGKILL)
        first.popen.wait(30)
    sim.clear_faults()
    second = start()
    client = sdk(second, key)
    done = finished(client, response_id)
    assert done.status == "completed", done.error
    texts = items_text(client, conv.id)
    assert texts.count(text) == 1 and texts.count(done.output_text) == 1, texts  # the turn appended once
    calls = calls_of(sim, text)
    assert len(calls) == 2 and {c["request_id"] for c in calls} == {request_id}  # repeated: its answer was lost
    nxt = client.responses.create(model="gpt", input="and the next turn", conversation=conv.id)
    assert nxt.status == "completed"
    assert items_text(client, conv.id)[-1] == nxt.output_text
    until(lambda: usage_rows(tmp_path, request_id) == 1, what="the turn's usage row")
    time.sleep(0.5)
    assert usage_rows(tmp_path, request_id) == 1  # billed once
    counted, billed = spent(second, tenant)
    assert counted == billed, (counted, billed)  # and counted once against the budget


def test_kill_between_an_agent_steps_answer_and_its_checkpoint(world, tmp_path):
    """The same point in a durable agent run: a model step answered and metered, killed before its
    checkpoint. The resumed run repeats the step under the same request id: billed and counted once."""
    sim, start = world
    first = start()
    tenant, key = tenant_key(first)
    with McpTestServer() as server:
        with admin(first) as client:
            body = {"name": "tools", "url": server.url, "allowed_tools": ["echo"], "require_approval": "never"}
            resp = client.post(f"/admin/v1/tenants/{tenant}/mcp-servers", json=body)
            assert resp.status_code == 201, resp.text
        sim.fault(chunk_delay_ms=100, chunks=60)  # a step streamed for about six seconds
        text = "steps=1: an agent step answered then killed"
        tool = {"type": "mcp", "server_label": "tools", "server_url": server.url}
        client = sdk(first, key)
        created = client.responses.create(model="gpt", input=text, tools=[tool], background=True)
        until(lambda: calls_of(sim, text), what="the first model step")
        step_id = calls_of(sim, text)[0]["request_id"]

        def output() -> list[str]:
            return [o.type for o in client.responses.retrieve(created.id).output]

        # The tool listing is checkpointed while the step streams: the lock is taken after that write.
        until(lambda: "mcp_list_tools" in output(), what="the listing's checkpoint")
        with write_lock(tmp_path / "multihome.db"):
            assert "mcp_call" not in output(), "the step was checkpointed before the lock: the point was missed"
            until(lambda: spooled(tmp_path, step_id), what="the step metered (in the spool)")
            os.kill(first.popen.pid, signal.SIGKILL)
            first.popen.wait(30)
        sim.clear_faults()
        second = start()
        client = sdk(second, key)
        done = finished(client, created.id)
        assert done.status == "completed", done.error
        steps = calls_of(sim, text)
        assert [c["request_id"] for c in steps].count(step_id) == 2  # the killed step, repeated
        assert len(steps) == 3  # and the step after its tool call
    until(lambda: usage_rows(tmp_path, step_id) == 1, what="the step's usage row")
    time.sleep(0.5)
    counted, billed = spent(second, tenant)
    assert counted == billed, (counted, billed)


def test_kill_between_an_mcp_calls_answer_and_its_checkpoint(world, tmp_path):
    """An agent run's tool call made (the MCP server ran it, the audit trail has it), killed before the
    checkpoint that records it. docs/agents.md "After a crash": the resumed run repeats that call under the
    same idempotency key (a server that honours it runs it once), makes no completed model step again, and
    is billed for each model step once."""
    sim, start = world
    first = start()
    tenant, key = tenant_key(first)
    calls_log = tmp_path / "mcp-calls.jsonl"
    with McpTestServer(call_log=calls_log) as server:
        with admin(first) as client:
            body = {"name": "tools", "url": server.url, "allowed_tools": ["slow"], "require_approval": "never"}
            resp = client.post(f"/admin/v1/tenants/{tenant}/mcp-servers", json=body)
            assert resp.status_code == 201, resp.text
        text = "steps=1: a tool call answered then killed"
        tool = {"type": "mcp", "server_label": "tools", "server_url": server.url}
        client = sdk(first, key)
        created = client.responses.create(model="gpt", input=text, tools=[tool], background=True)
        until(lambda: calls_log.exists() and calls_log.read_text(), what="the tool call to start")
        with write_lock(tmp_path / "multihome.db"):
            # The call ran (its agent_step event is on disk after its answer); its checkpoint waits for the lock.
            until(lambda: _tool_call_audited(tmp_path, created.id), what="the tool call's answer")
            done_calls = [o for o in client.responses.retrieve(created.id).output if o.type == "mcp_call"]
            assert not any(o.output for o in done_calls), "the call was checkpointed before the lock: missed"
            os.kill(first.popen.pid, signal.SIGKILL)
            first.popen.wait(30)
        steps_before = [c["request_id"] for c in calls_of(sim, text)]
        assert len(steps_before) == 1
        second = start()
        client = sdk(second, key)
        done = finished(client, created.id)
    assert done.status == "completed", done.error
    assert [o.type for o in done.output] == ["mcp_list_tools", "mcp_call", "message"], done.output
    slow = [json.loads(line) for line in calls_log.read_text().splitlines()]
    assert len(slow) == 2 and slow[0]["key"] == slow[1]["key"] and slow[0]["key"].startswith(created.id), slow
    steps = [c["request_id"] for c in calls_of(sim, text)]
    assert len(steps) == 2 and steps[0] == steps_before[0] and len(set(steps)) == 2  # the answered step once
    for step in steps:
        until(lambda step=step: usage_rows(tmp_path, step) == 1, what="each step's usage row")
    time.sleep(0.5)
    assert [usage_rows(tmp_path, step) for step in steps] == [1, 1]
    counted, billed = spent(second, tenant)
    assert counted == billed, (counted, billed)


def _tool_call_audited(tmp: Path, run_id: str) -> bool:
    for path in (tmp / "audit").glob("chn_*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            body = event.get("body") or {}
            if event.get("kind") == "agent_step" and body.get("run_id") == run_id and body.get("action") == "tool_call":
                return True
    return False


def test_a_response_whose_replica_was_killed_is_cancelled_on_the_restarted_one(world, tmp_path):
    """kill -9 while the upstream call is in flight; the restarted gateway answers the response as open and
    cancels it, whether the dead replica's lease still holds its job or the job was claimed again: the job
    settles, the response stays cancelled, its conversation takes the next turn, and what was billed is
    what the budget counted."""
    sim, start = world
    first = start()
    tenant, key = tenant_key(first)
    client = sdk(first, key)
    conv = client.conversations.create()
    sim.fault(chunk_delay_ms=200, chunks=50)  # ten seconds of streaming: in flight at the kill
    text = "killed then cancelled"
    created = client.responses.create(model="gpt", input=text, conversation=conv.id, background=True)
    until(lambda: calls_of(sim, text), what="the upstream call")
    os.kill(first.popen.pid, signal.SIGKILL)
    first.popen.wait(30)
    second = start()  # the upstream still slow: a run claimed again is in flight when the cancel comes
    client = sdk(second, key)
    assert client.responses.retrieve(created.id).status in ("queued", "in_progress")
    cancelled = client.responses.cancel(created.id)
    sim.clear_faults()
    assert cancelled.status == "cancelled" and cancelled.usage is None
    with sqlite3.connect(tmp_path / "multihome.db", timeout=60) as db:
        until(
            lambda: (
                db.execute("SELECT status FROM jobs WHERE ref_id = ?", (created.id,)).fetchone()[0]
                in ("done", "cancelled")
            ),
            what="the job claimed again and settled",
        )
    assert client.responses.retrieve(created.id).status == "cancelled"
    nxt = client.responses.create(model="gpt", input="the next turn", conversation=conv.id)
    assert nxt.status == "completed" and text not in items_text(client, conv.id)
    counted, billed = spent(second, tenant)
    assert counted == billed, (counted, billed)


def test_a_repeat_cancelled_after_the_crash_is_not_counted_on_top_of_the_killed_runs_row(world, tmp_path):
    """Killed between the metered answer and the checkpoint, as above; the restarted gateway's repeat is
    cancelled mid-call. The killed run's usage row stands (billed once); the repeat's partial is not counted
    against the budget on top of it."""
    sim, start = world
    first = start()
    tenant, key = tenant_key(first)
    client = sdk(first, key)
    sim.fault(chunk_delay_ms=100, chunks=30)
    text = "answered, killed, repeated, cancelled"
    created = client.responses.create(model="gpt", input=text, background=True)
    until(lambda: calls_of(sim, text), what="the upstream call")
    request_id = calls_of(sim, text)[0]["request_id"]
    with write_lock(tmp_path / "multihome.db"):
        assert client.responses.retrieve(created.id).status == "in_progress", "finished before the lock: missed"
        until(lambda: spooled(tmp_path, request_id), what="the answer metered (in the spool)")
        os.kill(first.popen.pid, signal.SIGKILL)
        first.popen.wait(30)
    second = start()  # the upstream still slow: the repeat is in flight when the cancel comes
    client = sdk(second, key)
    until(lambda: len(calls_of(sim, text)) == 2, what="the repeat's upstream call")
    assert client.responses.cancel(created.id).status == "cancelled"
    sim.clear_faults()
    with sqlite3.connect(tmp_path / "multihome.db", timeout=60) as db:
        until(
            lambda: (
                db.execute("SELECT status FROM jobs WHERE ref_id = ?", (created.id,)).fetchone()[0]
                in ("done", "cancelled")
            ),
            what="the job settled",
        )
    assert usage_rows(tmp_path, request_id) == 1
    counted, billed = spent(second, tenant)
    assert counted == billed, (counted, billed)


def test_a_streamed_response_whose_attempts_ran_out_is_failed_and_its_follower_is_sent_the_end(
    world_one_attempt, tmp_path
):
    """kill -9 mid-call of a background response whose job has no attempt left: the restarted gateway
    fails its job at its claim, and the response with it (it stayed `in_progress` until someone polled
    it), with a terminal `response.failed` event, so a client resuming its stream is sent the end (it
    waited for ever). Not appended to its conversation, not billed; the conversation takes the next turn."""
    sim, start = world_one_attempt
    first = start()
    _, key = tenant_key(first)
    client = sdk(first, key)
    conv = client.conversations.create()
    sim.fault(chunk_delay_ms=200, chunks=50)  # ten seconds of streaming: in flight at the kill
    text = "killed with no attempt left"
    created = client.responses.create(model="gpt", input=text, conversation=conv.id, background=True, stream=True)
    response_id = next(iter(created)).response.id
    created.close()
    until(lambda: calls_of(sim, text), what="the upstream call")
    os.kill(first.popen.pid, signal.SIGKILL)
    first.popen.wait(30)
    sim.clear_faults()
    second = start()
    with sqlite3.connect(tmp_path / "multihome.db", timeout=60) as db:

        def status() -> str:
            return db.execute("SELECT status FROM responses WHERE id = ?", (response_id,)).fetchone()[0]

        # Settled by the restarted gateway itself, not by a client's poll.
        until(lambda: status() == "failed", what="the response failed with its job")
        job = db.execute("SELECT status FROM jobs WHERE ref_id = ?", (response_id,)).fetchone()[0]
    assert job == "failed"
    client = openai.OpenAI(base_url=second.url + "/v1", api_key=key, max_retries=0, timeout=30)
    events = list(client.responses.retrieve(response_id, stream=True, starting_after=1))
    assert events and events[-1].type == "response.failed", [e.type for e in events]
    seqs = [e.sequence_number for e in events]
    assert seqs == list(range(2, 2 + len(seqs))), seqs  # none skipped, none twice
    done = client.responses.retrieve(response_id)
    assert done.status == "failed" and done.error is not None and done.error.code == "server_error"
    assert len(calls_of(sim, text)) == 1  # not run again
    assert text not in items_text(client, conv.id)
    nxt = client.responses.create(model="gpt", input="the next turn", conversation=conv.id)
    assert nxt.status == "completed" and items_text(client, conv.id)[-1] == nxt.output_text
    request_id = calls_of(sim, text)[0]["request_id"]
    assert usage_rows(tmp_path, request_id) == 0  # the abandoned call is not billed


def _read(stream, into: list) -> BaseException | None:
    """Every event of `stream` into `into`; what the SDK raised, if it did."""
    try:
        for event in stream:
            into.append(event)
    except BaseException as exc:  # the test asserts on it
        return exc
    return None


def test_a_stream_followed_at_the_drain_deadline_ends_with_an_error_saying_where_to_resume(world, tmp_path):
    """SIGTERM while a client follows a background response's stream: at the drain deadline (DRAIN) the stream
    ends with an `error` event (gateway_shutting_down) naming the `starting_after` to resume with, and a
    body ended as HTTP wants (it was cut off mid-body: the SDK's read failed with no event to read). The
    run is handed back; resumed on another gateway from that number, the stream goes on with none skipped
    and none twice, to response.completed."""
    sim, start = world
    first = start(*DRAIN)
    _, key = tenant_key(first)
    sim.fault(chunk_delay_ms=200, chunks=100)  # twenty seconds of streaming: open at the drain deadline
    stream = sdk(first, key).responses.create(
        model="gpt", input="followed through a graceful stop", background=True, stream=True
    )
    seen: list = []
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(_read, stream, seen)
        until(lambda: any(e.type == "response.output_text.delta" for e in seen), what="the first deltas")
        first.popen.send_signal(signal.SIGTERM)
        raised = reading.result(timeout=60)
    assert raised is None, repr(raised)
    last = seen[-1]
    assert last.type == "error" and last.code == "gateway_shutting_down", last
    assert f"starting_after={last.sequence_number}" in last.message, last.message
    assert last.sequence_number == seen[-2].sequence_number  # the last event sent: where to resume
    first.popen.wait(60)
    log = first.stop()
    assert "Traceback" not in log and "without completing response" not in log, log[-3000:]
    sim.clear_faults()
    second = start()
    rest = list(
        sdk(second, key).responses.retrieve(seen[0].response.id, stream=True, starting_after=last.sequence_number)
    )
    assert rest and rest[-1].type == "response.completed", [e.type for e in rest]
    numbers = [e.sequence_number for e in seen[:-1] + rest]
    assert numbers == list(range(len(numbers))), numbers


def test_a_streamed_agent_run_open_at_the_drain_deadline_ends_failed_with_an_error_event(world, tmp_path):
    """SIGTERM during a foreground agent run's stream (an `mcp` tool, a model step still streaming at the
    drain deadline): it ends with an `error` event (gateway_shutting_down) and `response.failed`, as a
    foreground Responses stream cut at the deadline does, not with a body cut off mid-chunk."""
    sim, start = world
    first = start(*DRAIN)
    tenant, key = tenant_key(first)
    with McpTestServer() as server:
        with admin(first) as client:
            body = {"name": "tools", "url": server.url, "allowed_tools": ["echo"], "require_approval": "never"}
            resp = client.post(f"/admin/v1/tenants/{tenant}/mcp-servers", json=body)
            assert resp.status_code == 201, resp.text
        sim.fault(chunk_delay_ms=200, chunks=100)  # the model step streams for twenty seconds
        tool = {"type": "mcp", "server_label": "tools", "server_url": server.url}
        stream = sdk(first, key).responses.create(
            model="gpt", input="an agent run at the drain deadline", tools=[tool], stream=True
        )
        seen: list = []
        with ThreadPoolExecutor(1) as pool:
            reading = pool.submit(_read, stream, seen)
            until(lambda: any(e.type == "response.output_text.delta" for e in seen), what="the step's deltas")
            first.popen.send_signal(signal.SIGTERM)
            raised = reading.result(timeout=60)
        first.popen.wait(60)
        log = first.stop()
    assert raised is None, repr(raised)
    assert [e.type for e in seen[-2:]] == ["error", "response.failed"], [e.type for e in seen]
    assert seen[-2].code == "gateway_shutting_down" and "drain deadline" in seen[-2].message
    assert seen[-1].response.status == "failed" and seen[-1].response.error.code == "server_error"
    numbers = [e.sequence_number for e in seen]
    assert numbers == list(range(len(numbers))), numbers
    assert "Traceback" not in log and "without completing response" not in log, log[-3000:]
