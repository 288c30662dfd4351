"""A foreground agent run (`mcp` tools, no `background`) whose client hangs up stops: the model step in
flight ends with its upstream call (charged its prompt, as any request sent and not answered); a tool call
in flight runs to its end and is kept with its result (it acted outside the gateway); no step or call comes
after. Once a tool ran, the response is stored `cancelled` with what it did (every call with its result),
and not appended to its conversation. A background run runs on without its client (docs/agents.md, "A
client that hangs up"). The official openai SDK with a short timeout; upstream calls are counted at the
simulator after the hang-up, tool calls at the MCP test server."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from builders import audit, breakers, config, database, deployment, groups, identity, price, simulated
from mcp_server import McpTestServer
from multihome.crypto import init_key_file

from .helpers import tenant_with_key, until
from .processes import Gateway, Simulator, local_http

ADMIN_KEY = "mh-agent-hang-up-admin"
SECRETS = {"MH_AH_ADMIN_KEY": ADMIN_KEY}
SLOW_MS = 60_000  # a model step far slower than any client here waits


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class World:
    def __init__(self, gateway: Gateway, sim: Simulator, server: McpTestServer, tmp: Path, db: Path) -> None:
        self.gateway, self.sim, self.server, self.tmp, self.db = gateway, sim, server, tmp, db
        with self.admin() as client:
            self.tenant, self.key = tenant_with_key(client, "acme")
            body = {
                "name": "tools",
                "url": server.url,
                "allowed_tools": ["record", "slow"],
                "require_approval": "never",
            }
            resp = client.post(f"/admin/v1/tenants/{self.tenant}/mcp-servers", json=body)
            assert resp.status_code == 201, resp.text
        self.tool = {"type": "mcp", "server_label": "tools", "server_url": server.url}

    def admin(self) -> httpx.Client:
        return local_http(base_url=self.gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)

    def sdk(self, timeout: float) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=self.key, max_retries=0, timeout=timeout)

    def calls(self) -> list[str]:
        return [
            line["tool"] + (f":{line['note']}" if "note" in line else "") for line in lines(self.tmp / "calls.jsonl")
        ]

    def rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql).fetchall()

    def upstream_after_hang_up(self, expected: int) -> None:
        """The simulator was sent `expected` model steps, and no more come (the run stopped)."""
        time.sleep(3)  # a run that went on would make its next model step within this (at once, or after a 2 s tool)
        assert len(self.sim.requests()) == expected, [r.get("request_id") for r in self.sim.requests()]

    def stored(self) -> list[tuple]:
        return self.rows("SELECT id, status FROM responses")

    def warm_up(self) -> None:
        """One run first (its MCP session is the process's first: the SDK loads), then a clean slate."""
        done = self.sdk(timeout=60).responses.create(
            model="gpt", input='call tools__record {"note": "warm"}', tools=[self.tool], store=False
        )
        assert done.status == "completed"
        (self.tmp / "calls.jsonl").unlink()
        self.sim.reset()
        # Its two steps' usage rows written (the writer flushes apart from the answer), then forgotten.
        until(lambda: self.rows("SELECT count(*) FROM usage_calls") == [(2,)], what="the warm-up's usage rows")
        with sqlite3.connect(self.db) as conn:
            conn.execute("DELETE FROM usage_calls")

    def open_create(self, body: dict) -> socket.socket:
        """`POST /v1/responses` on a socket of its own, which the test closes to hang up at a chosen moment."""
        url = urlsplit(self.gateway.url)
        conn = socket.create_connection((url.hostname, url.port), timeout=60)
        data = json.dumps(body).encode()
        head = (
            f"POST /v1/responses HTTP/1.1\r\nhost: {url.netloc}\r\nauthorization: Bearer {self.key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
        )
        conn.sendall(head.encode() + data)
        return conn


@pytest.fixture
def world(tmp_path, sqlite_database):
    db = sqlite_database()
    init_key_file(tmp_path / "kms.key")
    sim = Simulator("openai", "agent-hang-up")
    server = McpTestServer(call_log=tmp_path / "calls.jsonl").start()
    cfg = config(
        storage=database(db),
        kms={"local": {"key_file": str(tmp_path / "kms.key")}},
        identity=identity("MH_AH_ADMIN_KEY"),
        routing=breakers(0),
        audit=audit(tmp_path / "audit"),
        providers={"oa": simulated("openai", sim.url)},
        deployments={"oa": deployment("oa", "gpt-ah", price=price(1000, 2000))},
        # The gateway's own first-byte timeout far past the slow step: only the hang-up can end it.
        model_groups=groups({"gpt": "oa"}, retries=0, timeouts={"first_byte_s": 600}),
        responses={"background": {"poll_s": 0.1, "event_flush_ms": 50}},
        egress={"allow_networks": ["127.0.0.0/8"]},  # the MCP test server listens on loopback
    )
    gateway = Gateway(cfg, tmp_path, SECRETS)
    try:
        world = World(gateway, sim, server, tmp_path, Path(db.split("///", 1)[1]))
        world.warm_up()
        yield world
    finally:
        log = gateway.stop()
        sim.stop()
        server.stop()
        assert "Traceback" not in log, log[-3000:]


# The model calls the slow tool (2 s), then `record`, then answers: three model steps and two tool calls.
SCRIPT = 'call tools__slow {"seconds": 2}\ncall tools__record {"note": "after"}'
# For a client that gives up at its SDK timeout (2 s) while the slow tool (4 s) runs, on a busy machine too.
LONG_TOOL = 'call tools__slow {"seconds": 4}\ncall tools__record {"note": "after"}'


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_hang_up_during_a_model_step_ends_it_upstream_and_keeps_what_ran_as_cancelled(world, stream):
    """The client leaves while the second model step is in flight: that step's upstream call is cancelled,
    no further step or tool call is made, and the response is stored `cancelled` with the call that ran."""
    conn = world.open_create({"model": "gpt", "input": SCRIPT, "tools": [world.tool], "stream": stream})
    until(lambda: "slow" in world.calls(), what="the slow tool call to start")
    world.sim.fault(latency_ms=SLOW_MS, match="gpt-ah")  # the next model step hangs
    until(lambda: len(world.sim.requests()) == 2, what="the second model step to reach the upstream")
    conn.close()  # the client hangs up
    until(lambda: world.sim.stats()["cancelled"] == 1, what="the model step in flight to be cancelled upstream")
    world.upstream_after_hang_up(2)
    assert world.calls() == ["slow"]  # the call that ran, ran whole; "record after" never ran

    [(response_id, status)] = until(lambda: world.stored(), what="the cancelled response to be stored")
    assert status == "cancelled"
    got = world.sdk(timeout=30).responses.retrieve(response_id)
    assert got.status == "cancelled"
    assert [i.type for i in got.output] == ["mcp_list_tools", "mcp_call"]
    assert got.output[1].name == "slow" and "slept 2.0" in got.output[1].output and got.output[1].error is None

    # Metered: step 1 ok; step 2 cancelled (499), its prompt charged on a row of its own.
    def usage() -> list[tuple]:
        return world.rows("SELECT request_id, outcome, status, prompt_tokens FROM usage_calls ORDER BY request_id")

    until(lambda: len(usage()) >= 3, what="the steps' usage rows")
    rows = usage()
    assert [(o, s) for _, o, s, _ in rows] == [("ok", 200), ("cancelled", 499), ("unserved", 499)], rows
    assert rows[2][0] == rows[1][0] + ".1" and rows[2][3] > 0


def test_a_hang_up_during_a_tool_call_lets_it_finish_then_stops(world):
    """The client (the SDK, timeout 2 s) leaves while the slow tool runs: the call finishes and is kept, and
    the run makes no further model step: one upstream call (the run would have made three)."""
    with pytest.raises(openai.APITimeoutError):
        world.sdk(timeout=2).responses.create(model="gpt", input=LONG_TOOL, tools=[world.tool])
    [(response_id, status)] = until(lambda: world.stored(), what="the cancelled response to be stored")
    assert status == "cancelled"
    world.upstream_after_hang_up(1)  # only the step that asked for the slow call
    assert world.calls() == ["slow"]
    got = world.sdk(timeout=30).responses.retrieve(response_id)
    assert [i.type for i in got.output] == ["mcp_list_tools", "mcp_call"]
    assert "slept 4.0" in got.output[1].output


def test_a_hang_up_before_any_tool_ran_stores_nothing(world):
    """The first model step hangs and the client (the SDK, timeout 1 s) leaves: cancelled upstream,
    nothing stored, no tool run."""
    world.sim.fault(latency_ms=SLOW_MS, match="gpt-ah")
    with pytest.raises(openai.APITimeoutError):
        world.sdk(timeout=1).responses.create(model="gpt", input=SCRIPT, tools=[world.tool])
    until(lambda: world.sim.stats()["cancelled"] == 1, what="the first model step to be cancelled upstream")
    world.upstream_after_hang_up(1)
    assert world.calls() == [] and world.stored() == []


def test_a_conversation_does_not_get_the_cancelled_turn(world):
    client = world.sdk(timeout=30)
    conv = client.conversations.create()
    with pytest.raises(openai.APITimeoutError):
        world.sdk(timeout=2).responses.create(model="gpt", input=LONG_TOOL, tools=[world.tool], conversation=conv.id)
    until(lambda: (s := world.stored()) and s[0][1] == "cancelled", what="the cancelled response")
    world.upstream_after_hang_up(1)
    assert client.conversations.items.list(conv.id).data == []


def test_a_background_agent_run_runs_on_after_its_client_hung_up(world):
    client = world.sdk(timeout=30)
    stream = client.responses.create(model="gpt", input=SCRIPT, tools=[world.tool], background=True, stream=True)
    first = next(iter(stream))
    stream.close()  # the client hangs up at once
    response_id = first.response.id
    done = until(
        lambda: (r := client.responses.retrieve(response_id)).status not in ("queued", "in_progress") and r,
        what="the background run to finish without its client",
    )
    assert done.status == "completed"
    assert world.calls() == ["slow", "record:after"]
    assert len(world.sim.requests()) == 3
