"""Stateful-work pins end to end (docs/policy.md "Stateful-work pins"): the real gateway (SQLite, local
KMS) in front of two OpenAI-compatible simulators standing for two clouds, X (data zone eu) and Y (us),
a real MCP server built with the `mcp` SDK, driven with the official openai SDK.

Model group `agent` prefers Y (primary-first, Y first). A tenant whose stateful work is pinned to X
has every agent-run step (foreground and background) served by X, as the simulators' request logs
show, while its plain chat completions still go to Y, and still fail over from X to Y when X is down,
when its agent runs fail with an error that names the pin. Unpinned tenants, and pins that have ended,
change nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import openai
import pytest

from builders import audit, breakers, config, database, deployment, group, identity, simulated
from mcp_server import McpTestServer
from multihome.crypto import init_key_file

from .helpers import tenant_with_key, until
from .processes import Gateway, Simulator
from .stores import head_database

ADMIN_KEY = "mh-pins-admin"
SECRETS = {"MH_PIN_ADMIN_KEY": ADMIN_KEY}
FAST = {"background": {"poll_s": 0.1, "event_flush_ms": 50}}
TASK = "steps=3: add, echo, then record"


def stamp(delta_s: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delta_s)).isoformat()


class World:
    def __init__(self, gateway: Gateway, sims: dict[str, Simulator], server: McpTestServer, tmp: Path) -> None:
        self.gateway, self.sims, self.server, self.tmp = gateway, sims, server, tmp
        self.admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        self.tenants: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        for name in ("pinned", "free", "lapsed", "brief"):
            self.tenants[name], self.keys[name] = tenant_with_key(self.admin, name)
            body = {
                "name": "tools",
                "url": server.url,
                "allowed_tools": ["add", "echo", "record"],
                "require_approval": "never",
            }
            resp = self.admin.post(f"/admin/v1/tenants/{self.tenants[name]}/mcp-servers", json=body)
            assert resp.status_code == 201, resp.text
        self.pin = self.create_pin("pinned", {"providers": ["x"], "note": "contract c-1: X hosts the agents"})

    def create_pin(self, tenant: str, body: dict) -> dict:
        resp = self.admin.post(f"/admin/v1/tenants/{self.tenants[tenant]}/stateful-pins", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def sdk(self, tenant: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=self.keys[tenant], max_retries=0, timeout=30)

    def count(self, sim: str) -> int:
        return len(self.sims[sim].requests())

    def tools(self) -> list[dict]:
        return [{"type": "mcp", "server_label": "tools", "server_url": self.server.url}]

    def explain(self, tenant: str, work: str | None, model: str = "agent") -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        params = {"work": work} if work is not None else {}
        return httpx.post(
            self.gateway.url + "/v1/route/explain",
            json=body,
            params=params,
            headers={"authorization": f"Bearer {self.keys[tenant]}"},
            timeout=10,
        )


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pins")
    init_key_file(tmp / "kms.key")
    sims = {"x": Simulator("openai", "pin-x"), "y": Simulator("openai", "pin-y")}
    cfg = config(
        storage=database(head_database(request, "sqlite", tmp)),
        kms={"local": {"key_file": str(tmp / "kms.key")}},
        identity=identity("MH_PIN_ADMIN_KEY"),
        routing=breakers(0),
        audit=audit(tmp / "audit"),
        providers={
            "x": simulated("openai", sims["x"].url, data_zone="eu"),
            "y": simulated("openai", sims["y"].url, data_zone="us"),
        },
        deployments={"dx": deployment("x", "gpt-x"), "dy": deployment("y", "gpt-y")},
        model_groups={
            "agent": group("dy", "dx", retries=0),  # the strategy prefers Y
            "xfirst": group("dx", "dy", retries=0),
            "yonly": group("dy", retries=0),
        },
        responses=FAST,
        egress={"allow_networks": ["127.0.0.0/8"]},  # the MCP test server listens on loopback
    )
    gateway = None
    server = McpTestServer().start()
    try:
        gateway = Gateway(cfg, tmp, SECRETS)
        yield World(gateway, sims, server, tmp)
    finally:
        log = gateway.stop() if gateway is not None else ""
        for sim in sims.values():
            sim.stop()
        server.stop()
        assert "Traceback" not in log, log[-3000:]


def test_every_agent_step_is_served_by_the_pinned_cloud(world):
    x, y = world.count("x"), world.count("y")
    raw = world.sdk("pinned").responses.with_raw_response.create(model="agent", input=TASK, tools=world.tools())
    resp = raw.parse()
    assert resp.status == "completed", resp
    assert [i.type for i in resp.output].count("mcp_call") == 3
    assert raw.headers["x-multihome-deployment"] == "dx"
    assert world.count("x") - x == 4 and world.count("y") == y  # three tool steps and the answer, all on X

    # The same run in the background, on the job queue: every step still on X.
    x = world.count("x")
    run = world.sdk("pinned").responses.create(model="agent", input=TASK, tools=world.tools(), background=True)
    done = until(
        lambda: (r := world.sdk("pinned").responses.retrieve(run.id)).status not in ("queued", "in_progress") and r,
        what="the background run to end",
    )
    assert done.status == "completed", done
    assert world.count("x") - x == 4 and world.count("y") == y

    # A plain background response (no tools) is stateful work too.
    x = world.count("x")
    plain = world.sdk("pinned").responses.create(model="agent", input="hello", background=True)
    until(
        lambda: world.sdk("pinned").responses.retrieve(plain.id).status == "completed", what="the background response"
    )
    assert world.count("x") - x == 1 and world.count("y") == y


def test_an_unpinned_tenant_goes_where_the_strategy_says(world):
    x, y = world.count("x"), world.count("y")
    raw = world.sdk("free").responses.with_raw_response.create(model="agent", input=TASK, tools=world.tools())
    assert raw.parse().status == "completed"
    assert raw.headers["x-multihome-deployment"] == "dy"
    assert world.count("y") - y == 4 and world.count("x") == x


def test_the_pinned_tenants_stateless_calls_route_freely(world):
    sdk = world.sdk("pinned")
    chat = sdk.chat.completions.with_raw_response.create(model="agent", messages=[{"role": "user", "content": "hi"}])
    assert chat.headers["x-multihome-deployment"] == "dy"
    unstored = sdk.responses.with_raw_response.create(model="agent", input="hi", store=False)
    assert unstored.headers["x-multihome-deployment"] == "dy"
    stored = sdk.responses.with_raw_response.create(model="agent", input="hi")  # store defaults to true
    assert stored.headers["x-multihome-deployment"] == "dx"
    # A model with no deployment inside the pin: stateful work is refused, naming the pin; stateless is not.
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk.responses.create(model="yonly", input="hi")
    assert refused.value.body["code"] == "stateful_pin_unavailable"
    assert world.pin["id"] in refused.value.body["message"] and "providers [x]" in refused.value.body["message"]
    assert sdk.responses.create(model="yonly", input="hi", store=False).status == "completed"


def test_when_the_pinned_cloud_is_down_runs_fail_naming_the_pin_and_chat_fails_over(world):
    sdk = world.sdk("pinned")
    world.sims["x"].fault(status=503)
    try:
        y = world.count("y")
        with pytest.raises(openai.APIStatusError) as failed:
            sdk.responses.create(model="agent", input=TASK, tools=world.tools())
        assert failed.value.status_code == 503
        body = failed.value.body
        assert body["code"] == "stateful_pin_unavailable", body
        assert world.pin["id"] in body["message"] and "agent_step" in body["message"] and "dx" in body["message"]

        run = sdk.responses.create(model="agent", input=TASK, tools=world.tools(), background=True)
        done = until(
            lambda: (r := sdk.responses.retrieve(run.id)).status not in ("queued", "in_progress") and r,
            what="the background run to end",
        )
        assert done.status == "failed" and done.error is not None
        # A Response's error code is one of OpenAI's (docs/responses.md); the message names the pin.
        assert done.error.code == "server_error" and world.pin["id"] in done.error.message
        assert world.count("y") == y  # no step escaped to Y

        # The same tenant's plain chat completion fails over from X to Y.
        chat = sdk.chat.completions.with_raw_response.create(
            model="xfirst", messages=[{"role": "user", "content": "hi"}]
        )
        assert chat.headers["x-multihome-deployment"] == "dy"
        assert "dx" in chat.headers["x-multihome-attempts"]
        assert world.count("y") == y + 1
    finally:
        world.sims["x"].clear_faults()


def test_route_explain_shows_what_the_pin_removed(world):
    plain = world.explain("pinned", None)
    assert plain.status_code == 200 and plain.json()["would_attempt"] == ["dy", "dx"]
    assert "stateful_pin" not in plain.json()

    pinned = world.explain("pinned", "agent_step").json()
    assert pinned["would_attempt"] == ["dx"]
    assert list(pinned["stateful_pin"]["removed"]) == ["dy"]
    assert world.pin["id"] in pinned["stateful_pin"]["removed"]["dy"]
    assert [p["id"] for p in pinned["stateful_pin"]["pins"]] == [world.pin["id"]]
    skipped = {d["deployment"]: d for d in pinned["plans"][0]["deployments"]}
    assert skipped["dy"]["decision"] == "skipped" and world.pin["id"] in skipped["dy"]["reason"]

    free = world.explain("free", "background").json()
    assert free["would_attempt"] == ["dy", "dx"] and free["stateful_pin"]["pins"] == []
    bad = world.explain("pinned", "everything")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "work"


def test_a_pin_that_ended_is_not_enforced(world):
    world.create_pin("lapsed", {"providers": ["x"], "valid_from": stamp(-7200), "valid_until": stamp(-3600)})
    lapsed = world.sdk("lapsed").responses.with_raw_response.create(model="agent", input="hi")
    assert lapsed.headers["x-multihome-deployment"] == "dy"

    # A pin that ends a few seconds from now holds until then, and stops without a restart or a change.
    world.create_pin("brief", {"data_zones": ["EU"], "valid_until": stamp(4)})
    sdk = world.sdk("brief")
    first = sdk.responses.with_raw_response.create(model="agent", input="hi")
    assert first.headers["x-multihome-deployment"] == "dx"
    until(
        lambda: (
            sdk.responses.with_raw_response.create(model="agent", input="hi").headers["x-multihome-deployment"] == "dy"
        ),
        timeout=30,
        what="the pin to end",
    )
    assert world.explain("brief", "stored_response").json()["stateful_pin"]["pins"] == []


def test_a_revoked_pin_stops_applying_and_changes_are_audited(world):
    pin = world.create_pin("free", {"providers": ["x"], "work": ["stored_response"]})
    sdk = world.sdk("free")
    assert sdk.responses.with_raw_response.create(model="agent", input="hi").headers["x-multihome-deployment"] == "dx"
    path = f"/admin/v1/tenants/{world.tenants['free']}/stateful-pins"
    listed = world.admin.get(path).json()["data"]
    assert [p["id"] for p in listed] == [pin["id"]] and listed[0]["work"] == ["stored_response"]
    revoked = world.admin.delete(f"{path}/{pin['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert world.admin.delete(f"{path}/{pin['id']}").json()["revoked_at"] == revoked.json()["revoked_at"]
    assert sdk.responses.with_raw_response.create(model="agent", input="hi").headers["x-multihome-deployment"] == "dy"
    assert world.admin.get(f"{path}/pin_nonexistent").status_code == 404

    def actions() -> list[tuple[str, str]]:
        events = [
            json.loads(line)
            for trail in (world.tmp / "audit").glob("chn_*.jsonl")
            if not trail.name.endswith(".checkpoints.jsonl")
            for line in trail.read_text().splitlines()
        ]
        return [
            (e["body"].get("action"), e["body"].get("object_id", ""))
            for e in events
            if e["kind"] == "admin_change" and str(e["body"].get("action", "")).startswith("stateful_pin.")
        ]

    found = until(
        lambda: {("stateful_pin.create", pin["id"]), ("stateful_pin.revoke", pin["id"])} <= set(actions()) or None,
        timeout=15,
        what="the pin's changes on the audit trail",
    )
    assert found


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"providers": ["nowhere"]}, "unknown 'nowhere'"),
        ({"data_zones": ["mars"]}, "unknown 'mars'"),
        ({"providers": ["x"], "work": ["everything"]}, "unknown 'everything'"),
        ({}, "needs providers, data_zones or both"),
        ({"providers": []}, "empty list"),
        ({"providers": ["x"], "valid_from": stamp(3600), "valid_until": stamp(60)}, "is not after valid_from"),
        ({"providers": ["x"], "valid_until": stamp(-60)}, "is not after valid_from"),
        ({"providers": ["x"], "valid_until": "2030-01-01T00:00:00"}, "timezone-aware"),
        ({"providers": ["x"] * 101}, "more than 100"),
        ({"providers": ["x" * 5000]}, "longer than"),
        ({"data_zones": ["eu\nus"]}, "control character"),
        ({"providers": ["x"], "note": "n" * 5000}, "longer than"),
        ({"providers": "x"}, "Expected `array"),
        ({"providers": ["x"], "regions": ["eu"]}, "unknown field"),
        ({"providers": ["x"], "valid_until": "someday"}, "datetime"),
    ],
)
def test_hostile_pin_input_is_a_4xx(world, body, says):
    resp = world.admin.post(f"/admin/v1/tenants/{world.tenants['lapsed']}/stateful-pins", json=body)
    assert resp.status_code == 400, resp.text
    assert says.lower() in resp.json()["error"]["message"].lower(), resp.text


def test_only_an_org_admin_sets_pins(world):
    member = httpx.post(
        f"{world.gateway.url}/admin/v1/tenants/{world.tenants['pinned']}/stateful-pins",
        json={"providers": ["y"]},
        headers={"authorization": f"Bearer {world.keys['pinned']}"},
        timeout=10,
    )
    assert member.status_code == 403
    huge = world.admin.post(
        f"/admin/v1/tenants/{world.tenants['pinned']}/stateful-pins",
        content=json.dumps({"providers": ["x"] * 2_000_000}),
        headers={"content-type": "application/json"},
    )
    assert huge.status_code in (400, 413)
    assert world.admin.post("/admin/v1/tenants/ten_nope/stateful-pins", json={"providers": ["x"]}).status_code == 404


def test_the_cli_creates_lists_and_revokes_pins(world, monkeypatch, capsys):
    from multihome.cli.main import main

    monkeypatch.setenv("MULTIHOME_URL", world.gateway.url)
    monkeypatch.setenv("MULTIHOME_ADMIN_KEY", ADMIN_KEY)
    tenant = world.tenants["lapsed"]
    argv = ["stateful-pins", "create", "--tenant", tenant, "--provider", "x", "--work", "background"]
    assert main([*argv, "--until", "2099-01-01T00:00:00Z", "--note", "c-9"]) == 0
    made = capsys.readouterr().out
    assert made.startswith(f"pinned tenant {tenant}'s stateful work to providers x: pin_"), made
    pin = made.rsplit(": ", 1)[1].strip()
    assert main(["stateful-pins", "list", "--tenant", tenant]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split()[:4] == ["ID", "PROVIDERS", "DATA", "ZONES"]
    row = next(line for line in listed if line.startswith(pin))
    assert "background" in row and "active" in row and "c-9" in row
    assert main(["stateful-pins", "revoke", "--tenant", tenant, pin]) == 0
    assert json.loads(capsys.readouterr().out)["revoked_at"] is not None
    assert main(["stateful-pins", "list", "--tenant", tenant]) == 0
    assert "revoked" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith(pin))
