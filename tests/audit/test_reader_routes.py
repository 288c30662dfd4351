"""Queries: filters, cursor pagination, export, and tenant isolation on the admin route."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from multihome.api.admin.dispatch import AdminApi
from multihome.api.admin.events import change_of
from multihome.api.admin.route import Route, Services
from multihome.audit import AuditLog, AuditReader, Filters
from multihome.audit.events import AgentStep
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal

from .helpers import call, cli, config

ORG = Principal(tenant="*", subject="root", source="static", roles=frozenset({"org-admin"}))
AUDITOR_A = Principal(tenant="ten_a", subject="aud", source="api_key", roles=frozenset({"auditor"}))
ADMIN_B = Principal(tenant="ten_b", subject="adm", source="api_key", roles=frozenset({"tenant-admin"}))
MEMBER_A = Principal(tenant="ten_a", subject="m", source="api_key")


@pytest.fixture
def trail(tmp_path):
    async def main():
        for _ in range(2):  # two chains, as two replicas (or two process lifetimes) would leave
            log = AuditLog(config(tmp_path))
            await log.start()
            for i in range(30):
                tenant = "ten_a" if i % 3 else "ten_b"
                outcome = "denied" if i % 10 == 0 else "ok"
                log.record(call(i, tenant=tenant, outcome=outcome, model_group="gpt-4o" if i % 2 else "mini"))
            await log.append("agent_step", AgentStep(tenant="ten_a", subject="s", run_id="r", step=1, action="x"))
            await log.close()

    asyncio.run(main())
    return str(tmp_path)


def test_filters_combine(trail):
    reader = AuditReader(trail)
    found = [e for _, e in reader.iter_events(Filters(tenant="ten_b", outcome="denied"))]
    assert {e["body"]["request_id"] for e in found} == {"req_000000"}
    assert len(found) == 2 and all(e["kind"] == "policy_denial" for e in found)
    minis = [e for _, e in reader.iter_events(Filters(tenant="ten_a", model_group="mini", kind="call"))]
    assert minis and all(e["body"]["model_group"] == "mini" and e["body"]["tenant"] == "ten_a" for e in minis)
    assert [e for _, e in reader.iter_events(Filters(since=4e9))] == []


def test_cursor_pagination_visits_every_event_once(trail):
    reader, seen, cursor = AuditReader(trail), [], None
    for _ in range(100):  # bounded
        page, cursor = reader.page(Filters(), limit=7, after=cursor)
        seen.extend((e["chain"], e["seq"]) for e in page)
        if cursor is None:
            break
    assert len(seen) == 62 == len(set(seen))
    assert seen == sorted(seen)


def test_export_cli_writes_matching_stored_lines(trail):
    out = cli("export", "--dir", trail, "--tenant", "ten_a", "--kind", "call")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(r["body"]["tenant"] == "ten_a" and r["kind"] == "call" and r["hash"] for r in rows)


class Recorder:
    def __init__(self):
        self.messages = []

    async def __call__(self, message):
        self.messages.append(message)

    @property
    def status(self):
        return self.messages[0]["status"]

    def json(self):
        return json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


def get(routes, principal, query=""):
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/admin/v1/audit/events",
        "query_string": query.encode(),
        "headers": [],
    }
    sent = Recorder()

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(routes.handle(scope, receive, sent, b"req_t", principal))
    return sent


def test_org_admin_sees_every_tenant(trail):
    out = get(_trail_api(AuditReader(trail)), ORG, "limit=1000")
    assert out.status == 200
    assert {e["body"]["tenant"] for e in out.json()["data"]} == {"ten_a", "ten_b"}


def test_auditor_sees_only_its_tenant_even_without_asking(trail):
    out = get(_trail_api(AuditReader(trail)), AUDITOR_A, "limit=1000")
    tenants = {e["body"]["tenant"] for e in out.json()["data"]}
    assert tenants == {"ten_a"}


@pytest.mark.parametrize("principal", [AUDITOR_A, ADMIN_B])
def test_other_tenants_trail_is_forbidden(trail, principal):
    other = "ten_b" if principal.tenant == "ten_a" else "ten_a"
    with pytest.raises(ApiError) as err:
        get(_trail_api(AuditReader(trail)), principal, f"tenant={other}")
    assert err.value.status == 403 and err.value.body.code == "other_tenant"


def test_member_is_forbidden(trail):
    with pytest.raises(ApiError) as err:
        get(_trail_api(AuditReader(trail)), MEMBER_A)
    assert err.value.status == 403 and err.value.body.code == "insufficient_role"


def test_route_pages_with_cursor_and_rejects_bad_input(trail):
    routes = _trail_api(AuditReader(trail))
    first = get(routes, ORG, "limit=5&kind=call").json()
    assert len(first["data"]) == 5 and first["has_more"]
    second = get(routes, ORG, f"limit=5&kind=call&after={first['next_cursor']}").json()
    assert (
        first["data"][-1]["seq"] < second["data"][0]["seq"] or first["data"][-1]["chain"] < second["data"][0]["chain"]
    )
    # '²' is a digit to str.isdigit() but not to int(); a 5000-digit number is past int()'s own limit.
    for bad in ("since=yesterday", "after=garbage", "limit=x", "after=a:%C2%B2", "after=a:" + "9" * 5000):
        with pytest.raises(ApiError) as err:
            get(routes, ORG, bad)
        assert err.value.status == 400


def _trail_api(reader) -> AdminApi:
    return AdminApi(Services(audit_reader=reader))


async def _create_key(s, c):  # answers like keys.create_key: the new key's secret, once
    return {"id": "key_123", "key": "mh_secret_value", "object": "api_key"}


# One route as keys.py declares it, with a handler that needs no storage.
_FAKE_KEYS = (
    Route(
        "POST",
        "/admin/v1/tenants/{tenant}/keys",
        "any",
        _create_key,
        "create",
        status=201,
        event="key.create",
        check=lambda *a: None,
    ),
)


def test_admin_change_is_durable_before_the_response_and_holds_no_secret(tmp_path):
    async def main():
        log = AuditLog(config(tmp_path))
        await log.start()
        sent = Recorder()
        order = []
        original = sent.__call__

        async def send(message):
            if message["type"] == "http.response.start":
                order.append(log.written)  # how many events were durable when the answer started
            await original(message)

        scope = {"type": "http", "method": "POST", "path": "/admin/v1/tenants/ten_a/keys", "headers": []}
        await AdminApi(Services(audit_log=log), _FAKE_KEYS).handle(scope, None, send, b"r", AUDITOR_A)
        await log.close()
        return order, sent

    order, sent = asyncio.run(main())
    assert order == [1] and sent.status == 201
    [(raw, event)] = list(AuditReader(str(tmp_path)).iter_events(Filters(kind="admin_change")))
    assert event["body"]["action"] == "key.create" and event["body"]["object_id"] == "key_123"
    assert event["body"]["tenant"] == "ten_a" and event["body"]["actor"] == "aud"
    assert b"mh_secret_value" not in raw


@pytest.mark.parametrize(
    "method, path, action, object_id",
    [
        ("POST", "/admin/v1/contracts", "contract.create", "key_123"),  # the id comes from the response
        ("POST", "/admin/v1/tenants/ten_a/budgets", "budget.create", "key_123"),
        ("DELETE", "/admin/v1/tenants/ten_a/budgets/bud_9", "budget.delete", "bud_9"),
        ("POST", "/admin/v1/nowhere", "unknown", "key_123"),
    ],
)
def test_admin_changes_name_their_action(method, path, action, object_id):
    change = change_of(method, path, AUDITOR_A, msgspec.json.encode({"id": "key_123"}))
    assert (change.action, change.object_id) == (action, object_id)
