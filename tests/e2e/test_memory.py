"""`/v1/memory` end to end: the real gateway (SQLite, then PostgreSQL; local KMS; three tenants with
managed keys), driven with the official openai SDK's generic `post`/`get`/`delete` (the SDK reaches
any route under its base URL). A record comes back to its tenant only, search finds what answers a
question, forgetting a user deletes it for good, and neither the database nor a dump holds the text."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from builders import audit, breakers, config, database, deployment, groups, identity, simulated
from multihome.crypto import init_key_file
from multihome.storage.engine import create_engine
from pg import stored_bytes

from .processes import Gateway, Simulator
from .stores import head_database

ADMIN_KEY = "mh-memory-e2e-admin"
SECRETS = {"MH_M_ADMIN_KEY": ADMIN_KEY}
MARK = "PLAINTEXT-MARKER-memory-e2e-4b7a"
FACTS = [
    "My dog is a beagle called Biscuit.",
    "I am allergic to peanuts, so no satay please.",
    "My sister Ana lives in Lisbon; she is an architect.",
    "I always take the window seat on long flights.",
    f"{MARK}: the garage door code is 5512.",
]


class World:
    def __init__(self, db: str, gateway: Gateway, audit_dir: Path) -> None:
        self.db, self.gateway, self.audit_dir = db, gateway, audit_dir
        admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        self.keys: dict[str, str] = {}
        for name in ("acme", "globex"):
            resp = admin.post("/admin/v1/tenants", json={"name": name})
            assert resp.status_code == 201, resp.text
            tenant = resp.json()["id"]
            for role in ("member", "tenant-admin"):
                resp = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": role, "roles": [role]})
                assert resp.status_code == 201, resp.text
                self.keys[f"{name}-{role}"] = resp.json()["key"]
        admin.close()

    def sdk(self, who: str = "acme-member") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=self.keys[who], max_retries=0, timeout=30)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp(f"memory-{request.param}")
    db = head_database(request, request.param, tmp)
    init_key_file(tmp / "kms.key")
    sim = Simulator("openai", "memory-openai")
    gateway = None
    try:
        cfg = config(
            storage=database(db),
            kms={"local": {"key_file": str(tmp / "kms.key")}},
            identity=identity("MH_M_ADMIN_KEY"),
            audit=audit(tmp / "audit"),
            routing=breakers(0),
            providers={"oa": simulated("openai", sim.url)},
            deployments={"oa": deployment("oa", "gpt-m")},
            model_groups=groups({"gpt": "oa"}),
        )
        gateway = Gateway(cfg, tmp, SECRETS)
        yield World(db, gateway, tmp / "audit")
    finally:
        log = gateway.stop() if gateway is not None else ""
        sim.stop()
        assert "Traceback" not in log, log[-3000:]


def post(client: openai.OpenAI, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, cast_to=object, body=body)


def get(client: openai.OpenAI, path: str, **params: Any) -> Any:
    return client.get(path, cast_to=object, options={"params": params})


def test_write_search_list_get_delete(world):
    client = world.sdk()
    ns = {"agent_id": "concierge", "user_id": "user-42"}
    batch = post(
        client, "/memory/records", {**ns, "records": [{"text": t, "metadata": {"n": i}} for i, t in enumerate(FACTS)]}
    )
    assert batch["object"] == "list" and len(batch["data"]) == len(FACTS)
    one = post(client, "/memory/records", {**ns, "text": "My cat is called Miso.", "metadata": {"pet": "cat"}})
    assert one["object"] == "memory.record" and one["expires_at"] is None

    found = post(client, "/memory/search", {**ns, "query": "what's my dog's name?", "top_k": 3})
    assert found["data"][0]["text"] == FACTS[0] and len(found["data"]) <= 3
    found = post(client, "/memory/search", {**ns, "query": "pet name", "filters": {"pet": "cat"}})
    assert [h["id"] for h in found["data"]] == [one["id"]]

    page = get(client, "/memory/records", limit=2, **ns)
    assert [r["id"] for r in page["data"]] == [one["id"], batch["data"][-1]["id"]] and page["has_more"]
    rest = get(client, "/memory/records", limit=100, after=page["last_id"], **ns)
    assert len(rest["data"]) == len(FACTS) - 1 and not rest["has_more"]
    assert get(client, f"/memory/records/{one['id']}")["text"] == "My cat is called Miso."

    spaces = get(client, "/memory/namespaces")["data"]
    assert [(s["agent_id"], s["user_id"], s["records"]) for s in spaces] == [("concierge", "user-42", len(FACTS) + 1)]

    gone = client.delete(f"/memory/records/{one['id']}", cast_to=object)
    assert gone == {"id": one["id"], "object": "memory.record.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        get(client, f"/memory/records/{one['id']}")
    found = post(client, "/memory/search", {**ns, "query": "pet cat Miso", "top_k": 10})
    assert one["id"] not in [h["id"] for h in found["data"]]


def test_another_tenant_cannot_list_read_search_or_delete(world):
    acme, globex = world.sdk(), world.sdk("globex-member")
    ns = {"agent_id": "a", "user_id": "shared-name"}
    rec = post(acme, "/memory/records", {**ns, "text": "The launch date is the 14th of March."})
    with pytest.raises(openai.NotFoundError):
        get(globex, f"/memory/records/{rec['id']}")
    with pytest.raises(openai.NotFoundError):
        globex.delete(f"/memory/records/{rec['id']}", cast_to=object)
    assert get(globex, "/memory/records", **ns)["data"] == []
    assert post(globex, "/memory/search", {**ns, "query": "launch date"})["data"] == []
    assert all(s["user_id"] != "shared-name" for s in get(globex, "/memory/namespaces")["data"])
    with pytest.raises(openai.PermissionDeniedError) as refused:  # a member key cannot name another tenant
        get(globex, "/memory/namespaces", tenant="ten_anything")
    assert (refused.value.body["type"], refused.value.code) == ("permission_error", "other_tenant")
    assert get(acme, f"/memory/records/{rec['id']}")["id"] == rec["id"]


def test_an_org_admin_names_an_existing_tenant_by_id(world):
    org = openai.OpenAI(base_url=world.gateway.url + "/v1", api_key=ADMIN_KEY, max_retries=0, timeout=30)
    admin = httpx.Client(base_url=world.gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    acme = next(t["id"] for t in admin.get("/admin/v1/tenants").json()["data"] if t["name"] == "acme")
    ns = {"agent_id": "org-admin", "user_id": "u"}
    made = org.post(f"/memory/records?tenant={acme}", cast_to=object, body={**ns, "text": "Written by the org."})
    assert get(world.sdk(), f"/memory/records/{made['id']}")["text"] == "Written by the org."
    # A name, a typo or a made-up id is no tenant: a 404, not a write nobody could ever read back.
    for named in ("acme", "ten_doesnotexist"):
        with pytest.raises(openai.NotFoundError) as refused:
            org.post(f"/memory/records?tenant={named}", cast_to=object, body={**ns, "text": "Lost?"})
        assert refused.value.body["param"] == "tenant"
        with pytest.raises(openai.NotFoundError):
            get(org, "/memory/namespaces", tenant=named)
    # A tenant made a moment ago is known at once.
    fresh = admin.post("/admin/v1/tenants", json={"name": "fresh-memory"}).json()["id"]
    assert get(org, "/memory/namespaces", tenant=fresh)["data"] == []
    admin.close()


def test_bad_input_is_a_clear_400(world):
    client = world.sdk()
    cases = [
        ({"text": ""}, "text"),
        ({"text": "x", "records": [{"text": "y"}]}, "text"),
        ({"text": "x", "ttl_seconds": 0}, "ttl_seconds"),
        ({"text": "x", "metadata": {"k": {"nested": 1}}}, None),
        ({"text": "x", "metadata": {"big": 2**64}}, "metadata.big"),  # was a 500: no 64-bit integer
        ({"records": [{"text": "x", "metadata": {"small": -(2**63) - 1}}]}, "records[0].metadata.small"),
        ({"text": "x", "unknown": 1}, None),
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            post(client, "/memory/records", body)
        if param is not None:
            assert err.value.body["param"] == param, err.value.body
    with pytest.raises(openai.BadRequestError) as err:
        post(client, "/memory/search", {"query": "x", "filters": {"a": {"like": 1}}})
    assert err.value.body["param"] == "filters" and "like" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        post(client, "/memory/search", {"query": "x", "top_k": 1000})
    # Query strings: '²' is a digit to str.isdigit() but not to int(); a filter nested past the JSON
    # decoder's recursion limit (both were a 500).
    for params, param in [
        ({"limit": "²"}, "limit"),
        ({"filters": "[" * 5000}, "filters"),
        ({"before": "mem_x"}, "before"),
    ]:
        with pytest.raises(openai.BadRequestError) as err:
            get(client, "/memory/records", **params)
        assert err.value.body["param"] == param, err.value.body


def test_forget_user_needs_an_admin_and_really_deletes(world):
    member, admin = world.sdk(), world.sdk("acme-tenant-admin")
    for agent in ("concierge", "travel"):
        post(member, "/memory/records", {"agent_id": agent, "user_id": "leaver", "text": f"{MARK} leaver's secret"})
    keeper = post(member, "/memory/records", {"agent_id": "travel", "user_id": "stayer", "text": "stays"})
    assert post(member, "/memory/search", {"agent_id": "travel", "user_id": "leaver", "query": "secret"})["data"]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        member.delete("/memory/users/leaver", cast_to=object)
    assert (refused.value.body["type"], refused.value.code) == ("permission_error", "insufficient_role")
    done = admin.delete("/memory/users/leaver", cast_to=object)
    assert done["namespaces_deleted"] == 2 and done["records_deleted"] == 2
    assert post(member, "/memory/search", {"agent_id": "travel", "user_id": "leaver", "query": "secret"})["data"] == []
    assert all(s["user_id"] != "leaver" for s in get(member, "/memory/namespaces")["data"])
    assert get(member, f"/memory/records/{keeper['id']}")["text"] == "stays"
    events = [
        json.loads(line)
        for f in world.audit_dir.glob("*.jsonl")
        for line in f.read_text().splitlines()
        if '"kind":"memory"' in line
    ]
    bodies = [e["body"] for e in events if e["body"]["user_id"] == "leaver"]
    assert [(b["op"], b["namespaces"], b["records"], b["agent_id"]) for b in bodies] == [("forget_user", 2, 2, None)]
    assert MARK not in json.dumps(events)  # ids and counts, never content


def test_deleting_a_namespace_needs_an_admin_and_deletes_only_it(world):
    """docs/memory.md: the two bulk deletes (this one and forget-user) need a tenant-admin or org-admin key."""
    member, admin = world.sdk(), world.sdk("acme-tenant-admin")
    gone = post(member, "/memory/records", {"agent_id": "drop", "user_id": "u", "text": "in the dropped namespace"})
    kept = post(member, "/memory/records", {"agent_id": "drop", "user_id": "other", "text": "in a neighbour"})
    with pytest.raises(openai.PermissionDeniedError) as refused:
        member.delete("/memory/namespaces", cast_to=object, options={"params": {"agent_id": "drop", "user_id": "u"}})
    assert (refused.value.body["type"], refused.value.code) == ("permission_error", "insufficient_role")
    assert get(member, f"/memory/records/{gone['id']}")["text"] == "in the dropped namespace"  # nothing deleted
    done = admin.delete("/memory/namespaces", cast_to=object, options={"params": {"agent_id": "drop", "user_id": "u"}})
    assert done["deleted"] is True and done["records_deleted"] == 1
    with pytest.raises(openai.NotFoundError):
        get(member, f"/memory/records/{gone['id']}")
    assert get(member, f"/memory/records/{kept['id']}")["text"] == "in a neighbour"


def test_ttl_per_record_and_per_namespace(world):
    client = world.sdk()
    ns = {"agent_id": "ttl", "user_id": "u"}
    space = post(client, "/memory/namespaces", {**ns, "default_ttl_seconds": 86400})
    assert space["default_ttl_seconds"] == 86400
    rec = post(client, "/memory/records", {**ns, "text": "kept a day"})
    assert rec["expires_at"] - rec["created_at"] == 86400
    short = post(client, "/memory/records", {**ns, "text": "gone soon", "ttl_seconds": 1})
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            get(client, f"/memory/records/{short['id']}")
        except openai.NotFoundError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert short["id"] not in [h["id"] for h in post(client, "/memory/search", {**ns, "query": "gone soon"})["data"]]


def test_the_database_holds_no_plaintext(world):
    client = world.sdk()
    post(client, "/memory/records", {"user_id": "dump", "text": f"{MARK} in a record", "metadata": {"m": MARK}})
    assert post(client, "/memory/search", {"user_id": "dump", "query": "record"})["data"]

    async def dump() -> bytes:
        engine = create_engine(world.db)
        try:
            return await stored_bytes(engine, world.db)
        finally:
            await engine.dispose()

    assert MARK.encode() not in asyncio.run(dump())


def test_the_cli_lists_searches_and_forgets(world, monkeypatch, capsys):
    """`multihome memory ...` with the org-admin key, naming the tenant by name, as an operator would."""
    from multihome.cli import main

    post(world.sdk(), "/memory/records", {"agent_id": "cli", "user_id": "cli-user", "text": "Prefers aisle seats."})
    monkeypatch.setenv("MULTIHOME_URL", world.gateway.url)
    monkeypatch.setenv("MULTIHOME_ADMIN_KEY", ADMIN_KEY)

    def run(*argv: str) -> str:
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    listed = run("memory", "namespaces", "--tenant", "acme", "--user", "cli-user")
    assert "cli" in listed and "cli-user" in listed and "wordllama/l2_supercat/256 (256)" in listed
    assert "Prefers aisle seats." in run(
        "memory", "search", "seat preference", "--agent", "cli", "--user", "cli-user", "--tenant", "acme"
    )
    assert "Prefers aisle seats." in run("memory", "list", "--agent", "cli", "--user", "cli-user", "--tenant", "acme")
    with pytest.raises(SystemExit, match="--yes"):
        main(["memory", "forget-user", "cli-user", "--tenant", "acme"])
    out = run("memory", "forget-user", "cli-user", "--tenant", "acme", "--yes")
    assert "1 namespaces, 1 records deleted" in out
    assert "cli-user" not in run("memory", "namespaces", "--tenant", "acme")
    with pytest.raises(SystemExit, match="tenant"):  # the bootstrap key acts across tenants: it must name one
        main(["memory", "namespaces"])
    # docs/memory.md's `delete-namespace --agent concierge --tenant acme --yes`: an agent's own memory.
    post(world.sdk(), "/memory/records", {"agent_id": "cli-own", "text": "The agent's own note."})
    with pytest.raises(SystemExit, match="--yes"):
        main(["memory", "delete-namespace", "--agent", "cli-own", "--tenant", "acme"])
    assert "deleted namespace agent=cli-own user=-: 1 records" in run(
        "memory", "delete-namespace", "--agent", "cli-own", "--tenant", "acme", "--yes"
    )
    assert "cli-own" not in run("memory", "namespaces", "--tenant", "acme")
