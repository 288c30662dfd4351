"""The world of the MCP-tool end-to-end tests (test_responses_mcp.py, test_responses_conformance.py): the
real gateway (SQLite storage, local KMS, two tenants) in front of two OpenAI-compatible simulators and an
Anthropic one, with a real MCP server built with the `mcp` SDK (tests/mcp_server.py) registered for
the tenant `acme` as `tools` (no approval), `guarded` (approval always) and `sleepy`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from builders import breakers, config, database, deployment, groups, identity, simulated
from mcp_server import McpTestServer
from multihome.crypto import init_key_file

from .helpers import tenant_with_key
from .processes import Gateway, Simulator
from .stores import head_database

ADMIN_KEY = "mh-responses-mcp-admin"
SECRETS = {"MH_M_ADMIN_KEY": ADMIN_KEY, "MH_M_ANTHROPIC_KEY": "sk-ant-responses-mcp-77a1"}


class World:
    def __init__(self, gateway: Gateway, sims: dict[str, Simulator], server: McpTestServer, log: Path) -> None:
        self.gateway, self.sims, self.server, self.server_log = gateway, sims, server, log
        admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        self.keys, self.tenants = {}, {}
        for name in ("acme", "globex"):
            self.tenants[name], self.keys[name] = tenant_with_key(admin, name)
        servers = f"/admin/v1/tenants/{self.tenants['acme']}/mcp-servers"
        for name, approval in (("tools", "never"), ("guarded", "always")):
            body = {"name": name, "url": server.url, "allowed_tools": ["add", "echo", "record"]}
            resp = admin.post(servers, json={**body, "require_approval": approval})
            assert resp.status_code == 201, resp.text
        body = {"name": "sleepy", "url": server.url, "allowed_tools": ["slow"], "require_approval": "never"}
        assert admin.post(servers, json=body).status_code == 201
        admin.close()

    def sdk(self, tenant: str = "acme") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=self.keys[tenant], max_retries=0, timeout=30)

    def sent(self, sim: str) -> list[dict]:
        return [json.loads(r["body"]) for r in self.sims[sim].requests()]


def start_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The world for a module's tests (a generator: the module's fixture yields from it)."""
    tmp = tmp_path_factory.mktemp("responses-mcp")
    db = head_database(request, "sqlite", tmp)
    init_key_file(tmp / "kms.key")
    sims = {
        "oa": Simulator("openai", "mcp-openai"),
        "first": Simulator("openai", "mcp-first"),
        "an": Simulator("anthropic", "mcp-anthropic", "--api-key-env", "MH_M_ANTHROPIC_KEY", env=SECRETS),
    }
    cfg = config(
        storage=database(db),
        kms={"local": {"key_file": str(tmp / "kms.key")}},
        identity=identity("MH_M_ADMIN_KEY"),
        routing=breakers(0),
        providers={
            "oa": simulated("openai", sims["oa"].url),
            "first": simulated("openai", sims["first"].url),
            "an": simulated("anthropic", sims["an"].url, key_env="MH_M_ANTHROPIC_KEY"),
        },
        deployments={
            "oa": deployment("oa", "gpt-m"),
            "first": deployment("first", "gpt-first"),
            "an": deployment("an", "claude-m"),
        },
        model_groups=groups({"gpt": "oa", "claude": "an", "failover": ["first", "an"]}, retries=0),
        egress={"allow_networks": ["127.0.0.0/8"]},  # the MCP test server listens on loopback
    )
    gateway = None
    server = McpTestServer(call_log=tmp / "calls.jsonl").start()
    try:
        gateway = Gateway(cfg, tmp, SECRETS)
        yield World(gateway, sims, server, tmp / "calls.jsonl")
    finally:
        log = gateway.stop() if gateway is not None else ""
        for sim in sims.values():
            sim.stop()
        server.stop()
        assert "Traceback" not in log, log[-3000:]


def mcp(world: World, label: str = "tools", **extra: object) -> dict:
    return {"type": "mcp", "server_label": label, "server_url": world.server.url, **extra}
