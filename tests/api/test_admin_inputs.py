"""Hostile admin input through the real app (in process, SQLite and PostgreSQL storage): every
free-form field is bounded, no stored string holds a control character, and every number, date
and time is bounded, each refused with a 400 that names the field and says what to fix (never a
500, never stored). Issue 11 #8 (stored fields), #1 (input side), #10 (admin inputs)."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from admin_http import error, ok
from builders import database, identity, single, typed
from multihome.app import build_app
from stored_app import store_url

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-admin-inputs"

COMMITMENT = {
    "id": "base",
    "provider": "p",
    "amount": "1000",
    "starts_on": dt.date(2025, 1, 1),
    "ends_on": dt.date(2026, 12, 31),
}


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_INPUTS_ADMIN", ADMIN_KEY)


@pytest.fixture(params=["sqlite", "postgresql"])
async def root(request, tmp_path):
    """An org-admin client of a started gateway, on a fresh database of each backend (at the head revision)."""
    db = store_url(request, tmp_path)
    cfg = single(
        storage=database(db, refresh_s=0.05),
        identity=identity("MH_TEST_INPUTS_ADMIN"),
        contracts={"commitments": [COMMITMENT]},
    )
    app = build_app(typed(cfg))
    for service in app.services:
        await service.start()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gw", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ) as client:
        yield client
    for service in reversed(app.services):
        await service.close()


async def refused(resp, param: str | None, *words: str) -> dict:
    err = error(resp, 400)
    assert err["param"] == param and all(w in err["message"] for w in words), err
    return err


def nested(depth: int) -> dict:
    node: dict = {"leaf": 1}
    for _ in range(depth - 1):
        node = {"a": node}
    return node


async def test_stored_free_form_fields_are_bounded(root):
    tenant = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    t = f"/admin/v1/tenants/{tenant}"
    keys, events = f"{t}/keys", f"{t}/events?limit=1000"
    before = len((await ok(await root.get(events)))["data"])

    # Metadata: bytes, entries, depth, member names, strings and numbers; 900 KB used to be kept.
    await refused(
        await root.post(keys, json={"name": "k", "metadata": {"x": "y" * 900_000}}), "metadata.x", "longer than 1000"
    )
    await refused(
        await root.post(keys, json={"name": "k", "metadata": {f"k{i}": "v" * 900 for i in range(5)}}),
        "metadata",
        "larger than 4096 bytes",
    )
    await refused(
        await root.post(keys, json={"name": "k", "metadata": {f"k{i}": i for i in range(65)}}),
        "metadata",
        "more than 64",
    )
    await refused(
        await root.post("/admin/v1/tenants", json={"name": "deep", "metadata": nested(5)}),
        "metadata.a.a.a.a",
        "nested too deeply",
        "4 levels",
    )
    await refused(
        await root.post(keys, json={"name": "k", "metadata": {"n" * 101: 1}}),
        "metadata",
        "a member name is longer than 100",
    )
    await refused(await root.post(keys, json={"name": "k", "metadata": {"big": 2**64}}), "metadata.big", "64 bits")
    await refused(
        await root.post(keys, json={"name": "k", "scopes_endpoints": ["chat"] * 101}),
        "scopes_endpoints",
        "more than 100",
    )
    await refused(await root.post(f"{t}/teams", json={"name": "t" * 201}), "name", "longer than 200")
    # A tenant's PATCH is held to the same bounds as its create.
    await refused(await root.patch(t, json={"name": "t" * 201}), "name", "longer than 200")
    await refused(await root.patch(t, json={"metadata": nested(5)}), "metadata.a.a.a.a", "nested too deeply")
    await refused(await root.patch(t, json={"metadata": {"big": -(2**64)}}), "metadata.big", "64 bits")
    assert (await ok(await root.get(t)))["metadata"] == {}
    fits = {f"k{i}": "v" * 20 for i in range(60)} | {"nested": nested(3)}
    made = await ok(await root.post(keys, json={"name": "k", "metadata": fits}), 201)
    assert made["metadata"] == fits

    # Policies: descriptions, rule count, values per dimension, value length.
    policies = f"{t}/policies"
    allow = {"effect": "allow", "regions": ["eu-west-1"]}
    await refused(
        await root.post(policies, json={"scope": "tenant", "rules": [allow], "description": "d" * 1001}),
        "description",
        "longer than 1000",
    )
    await refused(
        await root.post(policies, json={"scope": "tenant", "rules": [{**allow, "description": "d" * 1001}]}),
        "rules[0].description",
        "longer than 1000",
    )
    await refused(
        await root.post(policies, json={"scope": "tenant", "rules": [allow] * 101}), "rules", "more than 100 rules"
    )
    await refused(
        await root.post(policies, json={"scope": "tenant", "rules": [{**allow, "regions": ["r"] * 101}]}),
        "rules[0].regions",
        "more than 100 values",
    )
    await refused(
        await root.post(policies, json={"scope": "tenant", "rules": [{**allow, "regions": ["r" * 201]}]}),
        "rules[0].regions[0]",
        "longer than 200",
    )
    policy = await ok(await root.post(policies, json={"scope": "tenant", "rules": [allow], "description": "EU"}), 201)
    await refused(
        await root.patch(f"{policies}/{policy['id']}", json={"description": "d" * 1001}),
        "description",
        "longer than 1000",
    )

    # Entitlements and contracts.
    grant = {"model_group": "g", "starts_on": "2025-01-01", "ends_on": "2025-12-31"}
    await refused(await root.post(f"{t}/entitlements", json={**grant, "note": "n" * 1001}), "note", "longer than 1000")
    contract = {"kind": "revenue_share", "id": "rs", "rate": "0.1", "starts_on": "2025-01-01", "ends_on": "2025-12-31"}
    for extra, param, words in (
        ({"parties": ["p"] * 101}, "parties", "parties has more than 100"),
        ({"parties": ["p" * 201]}, "parties[0]", "parties[0] is longer than 200"),
        ({"basis": {"tenants": ["t"] * 101}}, "basis.tenants", "basis.tenants has more than 100"),
    ):
        await refused(await root.post("/admin/v1/contracts", json={**contract, **extra}), param, words)

    # Nothing refused was stored.
    after = (await ok(await root.get(events)))["data"]
    assert [e["action"] for e in after[before:]] == ["key.create", "policy.create"]


async def test_control_characters_are_refused_in_every_stored_string(root):
    """A CR/LF in a rule description used to reach every call's x-multihome-attempts header; a NUL
    made PostgreSQL fail with a 500. Refused at input, naming the field and the character."""
    tenant = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    t = f"/admin/v1/tenants/{tenant}"
    admin_secret = (await ok(await root.post(f"{t}/keys", json={"name": "ta", "roles": ["tenant-admin"]}), 201))["key"]
    tenant_admin = httpx.AsyncClient(
        transport=root._transport, base_url="http://gw", headers={"authorization": f"Bearer {admin_secret}"}
    )
    allow = {"effect": "allow", "deployments": ["d"]}
    cases = [
        (
            tenant_admin,
            "POST",
            f"{t}/policies",
            {"scope": "tenant", "rules": [{**allow, "description": "EU\r\nX-Injected: 1"}]},
            "rules[0].description",
            "U+000D",
        ),
        (
            tenant_admin,
            "POST",
            f"{t}/policies",
            {"scope": "tenant", "rules": [{**allow, "deployments": ["d\nx"]}]},
            "rules[0].deployments[0]",
            "U+000A",
        ),
        (
            tenant_admin,
            "POST",
            f"{t}/policies",
            {"scope": "tenant", "rules": [allow], "description": "a\tb"},
            "description",
            "U+0009",
        ),
        (root, "POST", "/admin/v1/tenants", {"name": "evil\u0000corp"}, "name", "U+0000"),
        (
            root,
            "POST",
            "/admin/v1/tenants",
            {"name": "x", "metadata": {"k": "line\u2028break"}},
            "metadata.k",
            "U+2028",
        ),
        (root, "POST", "/admin/v1/tenants", {"name": "x", "metadata": {"k\r": 1}}, "metadata", "U+000D"),
        (root, "PATCH", t, {"name": "evil\u0000corp"}, "name", "U+0000"),
        (root, "PATCH", t, {"metadata": {"k": "line\u2028break"}}, "metadata.k", "U+2028"),
        (tenant_admin, "POST", f"{t}/teams", {"name": "ml\x1b[31m"}, "name", "U+001B"),
        (tenant_admin, "POST", f"{t}/keys", {"name": "ci\u0085"}, "name", "U+0085"),
        (
            tenant_admin,
            "POST",
            f"{t}/keys",
            {"name": "ci", "scopes_endpoints": ["chat\r"]},
            "scopes_endpoints[0]",
            "U+000D",
        ),
        (
            root,
            "POST",
            f"{t}/entitlements",
            {"model_group": "g", "starts_on": "2025-01-01", "ends_on": "2025-01-02", "note": "PO\n4711"},
            "note",
            "U+000A",
        ),
        (
            root,
            "POST",
            f"{t}/entitlements",
            {"model_group": "g\u007f", "starts_on": "2025-01-01", "ends_on": "2025-01-02"},
            "model_group",
            "U+007F",
        ),
    ]
    for client, method, url, body, param, char in cases:
        err = await refused(await client.request(method, url, json=body), param, char, "control character")
        assert "\r" not in err["message"] and "\n" not in err["message"]
    policy = await ok(await tenant_admin.post(f"{t}/policies", json={"scope": "tenant", "rules": [allow]}), 201)
    await refused(
        await tenant_admin.patch(f"{t}/policies/{policy['id']}", json={"description": "a\r\nb"}),
        "description",
        "U+000D",
    )
    await refused(
        await tenant_admin.patch(f"{t}/policies/{policy['id']}", json={"rules": [{**allow, "description": "a\r\nb"}]}),
        "rules[0].description",
        "U+000D",
    )
    contract = {
        "kind": "commitment",
        "id": "c",
        "provider": "p\r\n",
        "amount": "1",
        "starts_on": "2025-01-01",
        "ends_on": "2025-12-31",
    }
    await refused(await root.post("/admin/v1/contracts", json=contract), "provider", "provider", "U+000D")
    tenants = (await ok(await root.get("/admin/v1/tenants")))["data"]
    assert [x["name"] for x in tenants] == ["acme"]
    await tenant_admin.aclose()


async def test_numbers_dates_and_times_are_bounded(root):
    """Each of these used to answer 500 (or store something unusable); now 400 saying what to fix."""
    tenant = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    t = f"/admin/v1/tenants/{tenant}"
    keys = f"{t}/keys"
    for days in (1e12, 1e308, -5, 0, 36526):
        await refused(
            await root.post(keys, json={"name": "k", "expires_in_days": days}),
            "expires_in_days",
            "more than 0 and at most 36525",
        )
    await refused(
        await root.post(keys, json={"name": "k", "expires_in_days": 1, "expires_at": "2030-01-01T00:00:00Z"}),
        "expires_in_days",
        "not both",
    )
    for when, words in (
        ("0001-01-01T00:00:00+05:00", "from 1970-01-01"),
        ("9999-12-31T23:59:59-05:00", "to 9998-12-31"),
        ("0001-01-01T00:00:00Z", "from 1970-01-01"),
        ("2001-01-01T00:00:00Z", "in the past"),
        ("2300-01-01T00:00:00Z", "36525 days"),
        ("2030-01-01T00:00:00", "timezone-aware"),
    ):
        await refused(await root.post(keys, json={"name": "k", "expires_at": when}), "expires_at", words)
    made = await ok(await root.post(keys, json={"name": "k", "expires_in_days": 36525}), 201)
    assert made["expires_at"].startswith(str(int(made["created_at"][:4]) + 100))

    for query in (
        "after=99999999999999999999999",
        "after=-1",
        "after=1.5",
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=" + "9" * 5000,
    ):
        name = query.split("=")[0]
        for url in (f"{t}/events", "/admin/v1/events"):
            await refused(await root.get(f"{url}?{query}"), name, "whole number from")
    assert (await ok(await root.get(f"{t}/events?limit=1000&after=0")))["data"]
    assert (await ok(await root.get(f"/admin/v1/events?after={2**63 - 1}")))["data"] == []

    grant = {"model_group": "g", "starts_on": "2025-01-01", "ends_on": "2025-12-31"}
    await refused(
        await root.post(f"{t}/entitlements", json={**grant, "starts_on": "0001-01-01"}),
        "starts_on",
        "from 1970-01-01 to 9998-12-31",
    )
    await refused(
        await root.post(f"{t}/entitlements", json={**grant, "ends_on": "9999-12-31"}), "ends_on", "9998-12-31"
    )

    # Contracts: a far-future term used to be stored and then break every contracts refresh.
    contract = {
        "kind": "commitment",
        "id": "c",
        "provider": "p",
        "amount": "1000",
        "starts_on": "2025-01-01",
        "ends_on": "2025-12-31",
    }
    for extra, param, words in (
        ({"ends_on": "9999-12-31"}, "ends_on", "ends_on must be from"),
        ({"amount": "1e400"}, "amount", "at most"),
        ({"starts_on": "0001-01-01"}, "starts_on", "starts_on must be from"),
        ({"amount": "1E-1000000000"}, "amount", "amount has more than 9 decimal places"),  # was 0 in the context
        ({"currency": "usd"}, "currency", "3-letter ISO code"),
    ):
        await refused(await root.post("/admin/v1/contracts", json={**contract, **extra}), param, words)
    share = {"kind": "revenue_share", "id": "rs", "rate": "0.1", "starts_on": "2025-01-01", "ends_on": "2025-12-31"}
    for extra, param, words in (
        ({"rate": "0." + "1" * 100}, "rate", "rate has more than 18 decimal places"),  # products rounded at 60 digits
        ({"cap": "1E-1000000000"}, "cap", "cap has more than 9 decimal places"),
        ({"rate": "1.5"}, "rate", "rate must be a fraction between 0 and 1"),
        ({"ends_on": "2024-12-31"}, "ends_on", "is before starts_on"),
    ):
        await refused(await root.post("/admin/v1/contracts", json={**share, **extra}), param, words)
    # A provider or model group the config has not: the agreement would never accrue (the config's are checked).
    for body, param in (
        ({**contract, "provider": "q"}, "provider"),
        ({**share, "basis": {"providers": ["p", "q"]}}, "basis.providers[1]"),
        ({**share, "basis": {"model_groups": ["gg"]}}, "basis.model_groups[0]"),
    ):
        err = await refused(await root.post("/admin/v1/contracts", json=body), param, "of the gateway's config")
        assert "known: " in err["message"]
    # A client value is echoed to 64 characters: an id or a currency of 5,000 was repeated whole.
    for extra, param in (({"id": "x" * 5000 + "!"}, "id"), ({"currency": "u" * 5000}, "currency")):
        err = await refused(await root.post("/admin/v1/contracts", json={**share, **extra}), param)
        assert len(err["message"]) < 400, err["message"][:200]
    await ok(await root.post("/admin/v1/contracts", json=contract), 201)
    for url in ("/admin/v1/contracts/base/report", "/admin/v1/contracts/report.csv"):
        for at in ("0001-01-01T00:00:00%2B05:00", "9999-12-31T23:59:59-05:00"):
            await refused(await root.get(f"{url}?at={at}"), "at", "from 1970-01-01")
    for url in (f"{t}/usage", "/admin/v1/usage"):
        await refused(await root.get(f"{url}?start=0001-01-01T00:00:00%2B05:00"), "start", "from 1970-01-01")
        await refused(await root.get(f"{url}?end=9999-12-31T23:59:59-05:00"), "end", "to 9998-12-31")


# A NUL in an admin API query value or body names nothing (PostgreSQL's text refuses one): a 400, on every backend,
# before any read. Was a 500 on PostgreSQL for a keys page's `?after=` with a NUL after its first character (a
# NUL-led one was refused as an unknown key first), the revocations' `?tenant=`, and an id in a body (a key's
# `team_id`, a policy's or budget's `scope_id`, a revocation's `tenant_id`, explain's `key_id`).


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/admin/v1/tenants/{tenant}/keys", "after"),
        ("/admin/v1/token-revocations", "tenant"),
        ("/admin/v1/tenants/{tenant}/events", "after"),
        ("/admin/v1/tenants/{tenant}/usage", "group_by"),
    ],
)
async def test_a_nul_in_a_query_value_is_a_400_naming_the_parameter(root, path, param):
    tenant = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    err = error(await root.get(path.format(tenant=tenant), params={param: "key_a\u0000b"}), 400)
    assert err["param"] == param and "NUL" in err["message"], err


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/v1/tenants/{tenant}/keys", {"name": "k", "team_id": "team_a\u0000b"}),
        ("/admin/v1/tenants/{tenant}/policies", {"scope": "team", "scope_id": "team_a\u0000b", "rules": []}),
        (
            "/admin/v1/tenants/{tenant}/budgets",
            {"scope": "key", "scope_id": "key_a\u0000b", "amount": "5", "period": "day", "mode": "hard"},
        ),
        ("/admin/v1/token-revocations", {"kind": "subject", "issuer": "x", "subject": "s", "tenant_id": "a\u0000b"}),
        ("/admin/v1/policy/explain", {"tenant_id": "{tenant}", "model": "g", "key_id": "key_a\u0000b"}),
    ],
)
async def test_a_nul_in_a_body_is_a_400_naming_the_field_before_anything_is_read(root, path, body):
    tenant = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    body = {k: v.format(tenant=tenant) if isinstance(v, str) else v for k, v in body.items()}
    err = error(await root.post(path.format(tenant=tenant), json=body), 400)
    named_field = next(k for k, v in body.items() if isinstance(v, str) and "\x00" in v)
    assert "U+0000" in err["message"] and err["param"] == named_field, err
    # A backslash then "u0000" is text, not a NUL: not refused for it.
    named = await root.post(f"/admin/v1/tenants/{tenant}/teams", json={"name": "a\\u0000b"})
    assert named.status_code == 201, named.text


# A decimal is spelled as JSON writes a number: Decimal() read "0_5" as 5, " 5" and "+5" as 5, and took "Infinity",
# so a rate of "0_5" was stored as a rate of 5 (refused only as out of range) and a budget of "1_000" as 1000.
MISSPELLED = ("0_5", "1_000", " 0.5", "0.5 ", "+0.5", ".5", "5.", "05", "Infinity", "-Infinity", "NaN", "٥", "0x5", "")


async def test_a_decimal_is_spelled_as_json_writes_a_number_and_answered_in_plain_notation(root):
    tenant = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    budgets, contracts = f"/admin/v1/tenants/{tenant}/budgets", "/admin/v1/contracts"
    share = {"kind": "revenue_share", "id": "rs", "rate": "0.1", "starts_on": "2025-01-01", "ends_on": "2025-12-31"}
    commitment = {**COMMITMENT, "kind": "commitment", "id": "cm", "starts_on": "2025-01-01", "ends_on": "2025-12-31"}
    for spelled in MISSPELLED:
        for url, body, param in (
            (contracts, {**share, "rate": spelled}, "rate"),
            (contracts, {**share, "cap": spelled}, "cap"),
            (contracts, {**commitment, "amount": spelled}, "amount"),
            (budgets, {"scope": "tenant", "amount": spelled}, "amount"),
        ):
            err = await refused(await root.post(url, json=body), param, "as JSON writes one")
            assert err["code"] == "invalid_value", err
    assert (await ok(await root.get(budgets)))["data"] == []
    assert [c["id"] for c in (await ok(await root.get(contracts)))["data"]] == ["base"]

    made = await ok(await root.post(contracts, json={**share, "rate": "1E-18", "cap": "2.50E+2"}), 201)
    assert (made["rate"], made["cap"], made["accrued"]) == ("0.000000000000000001", "250", "0")
    assert (await ok(await root.get(f"{contracts}/rs")))["rate"] == "0.000000000000000001"
    made = await ok(await root.post(contracts, json={**commitment, "amount": 1e3}), 201)  # a JSON number
    assert made["amount"] == "1000"
    made = await ok(await root.post(budgets, json={"scope": "tenant", "amount": "1E+2"}), 201)
    assert made["amount"] == "100"
