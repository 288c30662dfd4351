"""Stored rows beyond the snapshot's tables that the gateway cannot read (a hand edit, a row another version
wrote): MCP server registrations and contracts. Never a 500: a list answers its readable rows and names the
others under `unreadable`; a get, a report, or a model call that needs the row answers 409 `unreadable_row`
naming it; one tenant's bad row never touches another tenant's calls. In process, on SQLite and PostgreSQL,
rows broken by SQL as an operator's edit would (docs/storage.md "A row the gateway cannot read")."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from admin_http import error, ok
from builders import price
from stored_app import STORES, StoredWorld, store_url, stored_app, until

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-unreadable-governance"
T = "/admin/v1/tenants"
C = "/admin/v1/contracts"
SECRET = "Bearer mcp-header-s3cret"
NEW = "Bearer mcp-header-n3w-s3cret"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_UNREADABLE_GOV", ADMIN_KEY)


class World(StoredWorld):
    secrets = (SECRET,)


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    url = store_url(request, tmp_path)
    fields = {"deployment_fields": {"price": price(3, 15)}, "contracts": {"refresh_s": 0.05, "flush_interval_s": 0.01}}
    async with stored_app(url, "MH_TEST_UNREADABLE_GOV", **fields) as (client, _):
        yield World(client, url, ADMIN_KEY)


def reported(listing: dict, row_id: str, table: str) -> dict:
    found = [u for u in listing.get("unreadable", []) if u["id"] == row_id]
    assert len(found) == 1, listing
    assert found[0]["object"] == "unreadable_row" and found[0]["table"] == table, found
    assert row_id not in {item.get("id") for item in listing["data"]}, listing
    return found[0]


def unreadable(resp: httpx.Response, name: str) -> dict:
    err = error(resp, 409)
    assert err["code"] == "unreadable_row" and name in err["message"], err
    return err


async def register_on_loopback(w: World, servers: list[tuple[str, dict]]) -> None:
    """Register `servers` ((tenant, body) pairs) at http://127.0.0.1:9/mcp through a second app on the same
    store whose `egress:` allows loopback, as a gateway of an earlier config did: this world's app (public
    addresses only) refuses such a registration, but keeps the rows and refuses every call to them where it
    is dialled (403 mcp_egress_denied), which is how far a readable one gets here."""
    loopback = {"egress": {"allow_networks": ["127.0.0.0/8"]}}
    async with stored_app(w.url, "MH_TEST_UNREADABLE_GOV", **loopback) as (client, _):
        earlier = World(client, w.url, w.admin_key)
        for tenant, body in servers:
            url = {"url": "http://127.0.0.1:9/mcp"}
            await ok(await earlier.call("POST", f"{T}/{tenant}/mcp-servers", json={**body, **url}), 201)


def mcp(label: str) -> dict:
    tool = {"type": "mcp", "server_label": label, "require_approval": "never"}
    return {"model": "g", "input": "use it", "tools": [tool]}


@pytest.mark.parametrize(
    ("column", "raw"),
    [
        pytest.param("allowed_tools", '"search"', id="allowed-tools-a-string"),
        pytest.param("header_names", '"Authorization"', id="header-names-a-string"),
        pytest.param("headers", None, id="headers-sealed-for-another-row"),
    ],
)
async def test_an_mcp_server_that_cannot_be_read_is_listed_apart_refused_by_get_and_by_a_call_and_deleted(
    world, column, raw
):
    w = world
    acme, acme_key = await w.tenant("acme")
    other, other_key = await w.tenant("other")
    body = {"headers": {"Authorization": SECRET}, "require_approval": "never"}
    await register_on_loopback(w, [(t, {"name": n, **body}) for t in (acme, other) for n in ("broken", "fine")])
    again = await w.call("POST", f"{T}/{acme}/mcp-servers", json={"name": "again", "url": "http://127.0.0.1:9/mcp"})
    assert error(again, 400)["code"] == "mcp_egress_denied"  # this app's rules refuse loopback
    where = "tenant_id = :t AND name = 'broken'"
    if column == "headers":  # a sealed value that no longer opens: the one sealed for its neighbour
        await w.sql(
            f"UPDATE mcp_servers SET headers = (SELECT headers FROM mcp_servers WHERE tenant_id = :t AND "
            f"name = 'fine') WHERE {where}",
            {"t": acme},
        )
    else:
        json = "CAST(:raw AS JSON)" if w.url.startswith("postgresql") else ":raw"
        await w.sql(f"UPDATE mcp_servers SET {column} = {json} WHERE {where}", {"raw": raw, "t": acme})

    listing = await ok(await w.call("GET", f"{T}/{acme}/mcp-servers"))
    if column == "headers":  # what the list shows is readable; the row fails where its headers are opened
        assert sorted(s["name"] for s in listing["data"]) == ["broken", "fine"]
    else:
        assert [s["name"] for s in listing["data"]] == ["fine"]
        bad = reported(listing, "broken", "mcp_servers")
        assert bad["tenant_id"] == acme and column in bad["problem"], bad
        unreadable(await w.call("GET", f"{T}/{acme}/mcp-servers/broken"), "broken")
    # A model call that names it: 409 before anything is sent (on main: a 500).
    err = unreadable(await w.call("POST", "/v1/responses", acme_key, json=mcp("broken")), "broken")
    assert err["param"].startswith("tools[0]")
    # Its neighbour and the other tenant's server of the same name get as far as egress (nothing listens).
    for key, label in ((acme_key, "fine"), (other_key, "broken")):
        assert error(await w.call("POST", "/v1/responses", key, json=mcp(label)), 403)["code"] == "mcp_egress_denied"
    assert "unreadable" not in await ok(await w.call("GET", f"{T}/{other}/mcp-servers"))

    gone = await ok(await w.call("DELETE", f"{T}/{acme}/mcp-servers/broken"))  # the mend
    assert gone["deleted"] is True
    assert "unreadable" not in await ok(await w.call("GET", f"{T}/{acme}/mcp-servers"))


@pytest.mark.parametrize(
    ("column", "raw", "mend"),
    [
        pytest.param("allowed_tools", '"search"', {"allowed_tools": ["search"]}, id="allowed-tools-a-string"),
        pytest.param("header_names", '"Authorization"', {"headers": {"Authorization": NEW}}, id="header-names"),
        pytest.param("headers", None, {"headers": {"Authorization": NEW}}, id="headers-sealed-for-another-row"),
    ],
)
async def test_an_mcp_server_that_cannot_be_read_is_mended_by_a_patch_of_what_is_wrong(world, column, raw, mend):
    """PATCH writes the given fields without reading the row first (as a tenant's PATCH does): the fields
    that are wrong, given anew, mend it in place; a PATCH that leaves it unreadable writes nothing (409).
    On main every PATCH of it was a 409: delete and register again was the only mend."""
    w = world
    w.secrets = (SECRET, NEW)
    acme, acme_key = await w.tenant("acme")
    body = {"headers": {"Authorization": SECRET}, "require_approval": "never"}
    await register_on_loopback(w, [(acme, {"name": n, "description": "d", **body}) for n in ("broken", "fine")])
    where = "tenant_id = :t AND name = 'broken'"
    if column == "headers":
        await w.sql(
            f"UPDATE mcp_servers SET headers = (SELECT headers FROM mcp_servers WHERE tenant_id = :t AND "
            f"name = 'fine') WHERE {where}",
            {"t": acme},
        )
    else:
        json = "CAST(:raw AS JSON)" if w.url.startswith("postgresql") else ":raw"
        await w.sql(f"UPDATE mcp_servers SET {column} = {json} WHERE {where}", {"raw": raw, "t": acme})

    other = await w.call("PATCH", f"{T}/{acme}/mcp-servers/broken", json={"description": "other"})
    if column == "headers":  # what the list shows reads; the headers are what a call cannot open
        assert (await ok(other))["description"] == "other"
    else:  # still unreadable after it: rolled back, nothing written
        assert column in unreadable(other, "broken")["message"]
        unreadable(await w.call("GET", f"{T}/{acme}/mcp-servers/broken"), "broken")
    unreadable(await w.call("POST", "/v1/responses", acme_key, json=mcp("broken")), "broken")

    mended = await ok(await w.call("PATCH", f"{T}/{acme}/mcp-servers/broken", json=mend))  # on main: 409
    assert mended["name"] == "broken" and mended["url"] == "http://127.0.0.1:9/mcp"
    assert mended["description"] == ("other" if column == "headers" else "d")
    assert mended["header_names"] == ["Authorization"]
    if column == "allowed_tools":
        assert mended["allowed_tools"] == ["search"]
    assert await ok(await w.call("GET", f"{T}/{acme}/mcp-servers/broken")) == mended
    assert "unreadable" not in await ok(await w.call("GET", f"{T}/{acme}/mcp-servers"))
    # A call reaches egress now, its headers opened (nothing listens there): no longer a 409.
    assert error(await w.call("POST", "/v1/responses", acme_key, json=mcp("broken")), 403)["code"] == (
        "mcp_egress_denied"
    )


async def test_a_contract_that_cannot_be_read_is_listed_apart_and_refused_by_get_and_reports(world):
    w = world
    _, key = await w.tenant("acme")
    today = dt.date.today()
    contract = {
        "kind": "revenue_share",
        "parties": ["Us", "Them"],
        "rate": "0.5",
        "starts_on": str(today - dt.timedelta(days=1)),
        "ends_on": str(today + dt.timedelta(days=30)),
    }
    for cid in ("rs-bad", "rs-good"):
        await ok(await w.call("POST", C, json={"id": cid, **contract}), 201)
    chat = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
    assert (await w.call("POST", "/v1/chat/completions", key, json=chat)).status_code == 200

    async def accrued():
        return (await ok(await w.call("GET", f"{C}/rs-good")))["calls"] == 1

    await until(accrued, "the call did not accrue", 20)
    json = "CAST(:raw AS JSON)" if w.url.startswith("postgresql") else ":raw"
    await w.sql(f"UPDATE contract_agreements SET spec = {json} WHERE id = 'rs-bad'", {"raw": '{"kind": "nope"}'})

    async def left_out():
        listing = await ok(await w.call("GET", C))
        return listing if "unreadable" in listing else None

    listing = await until(left_out, "the agreement was not reported", 20)  # on main: never (each refresh failed)
    assert [c["id"] for c in listing["data"]] == ["rs-good"]
    assert reported(listing, "rs-bad", "contract_agreements")["tenant_id"] is None
    unreadable(await w.call("GET", f"{C}/rs-bad"), "rs-bad")
    assert (await ok(await w.call("GET", f"{C}/rs-good/report")))["calls"] == 1
    again = await w.call("POST", C, json={"id": "rs-bad", **contract})  # its id is taken
    assert error(again, 409)["code"] == "conflict"
    new = await w.call("POST", C, json={"id": "rs-new", **contract})  # on main: the refresh failed, 400
    assert (await ok(new, 201))["id"] == "rs-new"

    # An accrual that cannot be read: the contract's report would be wrong without it, so it is a 409.
    await w.sql("UPDATE ledger_accruals SET amount = 'lots' WHERE contract_id = 'rs-good'")
    err = unreadable(await w.call("GET", f"{C}/rs-good/report"), "ledger_accruals")
    assert "lots" not in err["message"]
    unreadable(await w.call("GET", f"{C}/report.csv"), "ledger_accruals")

    # The console's contracts page shows the others and names both (on main: its reports' 409 failed the page).
    assert (await w.client.post("/console/login", data={"key": ADMIN_KEY})).status_code == 303
    page = await w.client.get("/console/contracts")
    assert page.status_code == 200, page.text[:500]
    assert 'data-unreadable="rs-bad"' in page.text and 'data-unreadable="rs-good"' in page.text
    assert "rs-new" in page.text and "lots" not in page.text
