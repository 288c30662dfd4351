"""`multihome memory namespaces` against the real gateway app served by uvicorn on 127.0.0.1 (a thread of this
process): a tenant's namespaces are listed a page at a time, and the command shows every page."""

from __future__ import annotations

import os

import httpx
import pytest

from admin_http import served_for_cli
from multihome.cli import main

ADMIN_KEY = "mh-bootstrap-admin-key-for-the-memory-cli"

CONFIG = """
storage: {{url: "sqlite+aiosqlite:///{tmp}/mh.db"}}
identity: {{admin_key_env: MH_TEST_MEMORY_CLI_ADMIN}}
kms: {{local: {{key_file: "{tmp}/kms.key"}}}}
providers: {{p: {{kind: openai, endpoint: "http://127.0.0.1:9/v1"}}}}
deployments: {{d: {{provider: p, model: m}}}}
model_groups: {{g: {{deployments: [d]}}}}
"""


@pytest.fixture
def gateway(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_MEMORY_CLI_ADMIN", ADMIN_KEY)
    with served_for_cli(CONFIG.format(tmp=tmp_path), monkeypatch, ADMIN_KEY):
        yield


def test_namespaces_lists_every_page(gateway, capsys, monkeypatch):
    monkeypatch.setattr("multihome.api.admin.pages.MAX_PAGE", 2)  # the default page: 2 namespaces
    assert main(["tenants", "create", "acme"]) == 0
    tenant = capsys.readouterr().out.split(": ")[1].strip()
    url, auth = os.environ["MULTIHOME_URL"], {"authorization": f"Bearer {ADMIN_KEY}"}
    users = [f"page-user-{i}" for i in range(5)]
    for user in users:
        body = {"agent_id": "cli", "user_id": user, "default_ttl_seconds": 60}
        resp = httpx.post(f"{url}/v1/memory/namespaces", params={"tenant": tenant}, json=body, headers=auth)
        assert resp.status_code == 200, resp.text
    first = httpx.get(f"{url}/v1/memory/namespaces", params={"tenant": tenant}, headers=auth).json()
    assert len(first["data"]) == 2 and first["has_more"]

    assert main(["memory", "namespaces", "--tenant", "acme"]) == 0
    listed = capsys.readouterr().out
    assert [u for u in users if u in listed] == users
