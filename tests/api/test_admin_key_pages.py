"""A tenant's keys are listed a page at a time: revoked keys stay listed, so the list grows with every key ever
made, and it was read, built and encoded whole on the event loop (100,000 keys: 2.4 s of every tenant's calls
waiting, 30 MB in one answer). `?limit=` (1-1000, default 1000), `?after=<last_id>`, `has_more`; the CLI reads
every page, the console shows the first (docs/api.md)."""

from __future__ import annotations

import json

import httpx
import pytest

from admin_http import error, ok, running, served_for_cli
from multihome.api.admin import keys as admin_keys
from multihome.cli import main

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-key-pages"
CONFIG = """
storage: {{url: "sqlite+aiosqlite:///{tmp}/mh.db"}}
identity: {{admin_key_env: MH_TEST_KEY_PAGES_ADMIN}}
providers: {{p: {{kind: openai, endpoint: "http://127.0.0.1:9/v1"}}}}
deployments: {{d: {{provider: p, model: m}}}}
model_groups: {{g: {{deployments: [d]}}}}
"""
T = "/admin/v1/tenants"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_KEY_PAGES_ADMIN", ADMIN_KEY)


def _client(app) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(
        transport=transport, base_url="http://gw", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )


async def test_keys_come_a_page_at_a_time_revoked_ones_too(tmp_path):
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid = (await ok(await admin.post(T, json={"name": "acme"}), 201))["id"]
        made = [(await ok(await admin.post(f"{T}/{tid}/keys", json={"name": f"k{i}"}), 201))["id"] for i in range(25)]
        for key_id in made[3:6]:
            await ok(await admin.delete(f"{T}/{tid}/keys/{key_id}"))
        seen, after, pages = [], None, 0
        while True:
            query = {"limit": 10, **({"after": after} if after else {})}
            page = await ok(await admin.get(f"{T}/{tid}/keys", params=query))
            pages += 1
            assert len(page["data"]) <= 10 and pages <= 3
            seen += [k["id"] for k in page["data"]]
            assert page["last_id"] == page["data"][-1]["id"]
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert (seen, pages) == (made, 3)  # oldest first, each once, revoked ones with them
        whole = await ok(await admin.get(f"{T}/{tid}/keys"))  # the default page holds up to 1,000
        assert [k["id"] for k in whole["data"]] == made and whole["has_more"] is False
        for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "ten"}):
            assert error(await admin.get(f"{T}/{tid}/keys", params=bad), 400)["param"] == "limit"
        refused = error(await admin.get(f"{T}/{tid}/keys", params={"after": "key_nosuchkey"}), 400)
        assert "after" in refused["message"]
        # Another tenant's key is no cursor here: the same answer as an id that does not exist, nothing of it shown.
        other = (await ok(await admin.post(T, json={"name": "globex"}), 201))["id"]
        theirs = (await ok(await admin.post(f"{T}/{other}/keys", json={"name": "theirs"}), 201))["id"]
        foreign = error(await admin.get(f"{T}/{tid}/keys", params={"after": theirs}), 400)
        assert foreign["message"] == refused["message"].replace("key_nosuchkey", theirs)
        hostile = error(await admin.get(f"{T}/{tid}/keys", params={"after": "\u0000" + "x" * 10_000}), 400)
        assert len(hostile["message"]) < 300


@pytest.fixture
def served(tmp_path, monkeypatch):
    with served_for_cli(CONFIG.format(tmp=tmp_path), monkeypatch, ADMIN_KEY):
        yield


def test_the_cli_lists_every_page(served, capsys, monkeypatch):
    monkeypatch.setattr(admin_keys, "MAX_PAGE", 4)  # pages of 4: the 11 keys come in three

    def run(*argv: str) -> str:
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    run("tenants", "create", "acme")
    for i in range(11):
        run("keys", "create", "--tenant", "acme", "--name", f"cli-key-{i}")
    table = run("keys", "list", "--tenant", "acme")
    assert sorted(w for line in table.splitlines() for w in line.split() if w.startswith("cli-key-")) == sorted(
        f"cli-key-{i}" for i in range(11)
    ), table
    listed = json.loads(run("keys", "list", "--tenant", "acme", "--json"))
    assert [k["name"] for k in listed["data"]] == [f"cli-key-{i}" for i in range(11)] and "has_more" not in listed
    revoked = json.loads(run("keys", "revoke", "--tenant", "acme", "cli-key-10"))  # by name: found on the last page
    assert revoked["id"] == listed["data"][-1]["id"] and revoked["revoked_at"]
