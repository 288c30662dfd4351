"""A report that matches a hand-computed example, its CSV, the admin API and the CLI, and the
burn-down numbers routing reads (CommitmentSource)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal

import msgspec
import pytest

from builders import NOWHERE, config, deployment, group, open_door, provider, typed
from multihome.api.admin.dispatch import AdminApi
from multihome.api.admin.route import Services
from multihome.config.contracts import parse_contracts
from multihome.contracts.report import CSV_COLUMNS, build_report, to_csv
from multihome.contracts.service import ContractsService
from multihome.routing.commitments import CommitmentSource
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal

from .helpers import metered, ts

pytestmark = pytest.mark.anyio
UTC = dt.UTC
NOW = dt.datetime(2026, 1, 11, tzinfo=UTC)

CFG = {
    "revenue_share": [
        {
            "id": "rs-fabrikam",
            "parties": ["Contoso", "Fabrikam"],
            "rate": "0.15",
            "basis": {"providers": ["azure-eastus"], "model_groups": ["gpt-4o"]},
            "cap": "100.00",
            "starts_on": "2026-01-01",
            "ends_on": "2026-06-30",
        }
    ],
    "commitments": [
        {
            "id": "azure-commit",
            "provider": "azure-eastus",
            "amount": "3100.00",
            "starts_on": "2026-01-01",
            "ends_on": "2026-01-31",
        }
    ],
    "flush_interval_s": 0.01,
}
# The calls, all on azure-eastus / gpt-4o:      revenue share (x 0.15)   commitment (x 1)
CALLS = [
    ("req_1", "100.00", "2026-01-02T12:00"),  # 15.00                    100.00   (before the 7-day window)
    ("req_2", "40.00", "2026-01-05T09:00"),  # 6.00                      40.00
    ("req_3", "33.3333", "2026-01-08T18:30"),  # 4.999995                33.3333
    ("req_4", "20.10", "2026-01-10T23:59"),  # 3.015                     20.10
]


@pytest.fixture
async def service(migrated_url):
    svc = ContractsService(parse_contracts(CFG), migrated_url, clock=lambda: NOW.timestamp())
    await svc.start()
    for rid, cost, at in CALLS:
        svc.metered(metered(rid, cost, ts(at)))
    await svc.flush()
    yield svc
    await svc.close()


async def test_revenue_share_report_matches_the_hand_computed_example(service):
    r = await build_report(service.agreement("rs-fabrikam"), service.ledger, NOW, window_days=7)
    # accrued = 15.00 + 6.00 + 4.999995 + 3.015 = 29.014995 -> 29.01 (half-even to cents)
    assert (r.accrued_exact, r.accrued, r.calls) == ("29.014995", "29.01", 4)
    # remaining = 100.00 - 29.014995 = 70.985005 -> 70.99
    assert (r.limit, r.remaining) == ("100.00", "70.99")
    # window = [Jan 4, Jan 11) = 7 days; accrued in it = 6.00 + 4.999995 + 3.015 = 14.014995
    # rate = 14.014995 / 7 = 2.0021421428... per day -> 2.00
    assert r.window_days == 7.0 and r.daily_rate == "2.00"
    assert Decimal(r.daily_rate_exact).quantize(Decimal("1e-9")) == Decimal("2.002142143")
    # cap reached in 70.985005 / 2.0021421428 = 35.4545 days: Jan 11 + 35.45 d = 2026-02-15 (10:54 UTC)
    assert r.projected_date == "2026-02-15"
    assert (r.status, r.requested, r.forgone, r.capped_at) == ("accruing", "29.01", "0.00", None)


async def test_commitment_report_matches_the_hand_computed_example(service):
    r = await build_report(service.agreement("azure-commit"), service.ledger, NOW, window_days=7)
    # burned = 100.00 + 40.00 + 33.3333 + 20.10 = 193.4333
    assert (r.accrued_exact, r.accrued) == ("193.4333", "193.43")
    # planned: 3100.00 over 31 days = 100.00/day; 10 days elapsed on Jan 11 00:00 -> 1000.00
    assert r.planned_to_date == "1000.00"
    # burn vs plan = (193.4333 - 1000.00) / 3100.00 = -0.2601828... -> behind
    assert r.burn_vs_plan == -0.260183 and r.status == "behind"
    # remaining = 3100.00 - 193.4333 = 2906.5667 -> 2906.57
    assert r.remaining == "2906.57"
    # rate = (40.00 + 33.3333 + 20.10) / 7 = 13.3476... -> 13.35 per day;
    # used up in 2906.5667 / 13.3476 = 217.8 days: after the end, so no date
    assert r.daily_rate == "13.35" and r.projected_date is None
    # at the end (21 days left): 193.4333 + 13.347614... x 21 = 193.4333 + 280.2999 = 473.7332 -> 473.73
    assert r.projected_at_end == "473.73"


async def test_cap_reached_shows_capped_and_forgone(service):
    service.metered(metered("req_big", "600.00", ts("2026-01-10T23:59:30")))  # requests 90.00; 70.985005 left
    await service.flush()
    r = await build_report(service.agreement("rs-fabrikam"), service.ledger, NOW)
    assert (r.accrued, r.remaining, r.status, r.projected_date) == ("100.00", "0.00", "capped", None)
    assert (r.requested, r.forgone) == ("119.01", "19.01")  # 29.014995 + 90 = 119.014995; forgone 19.014995
    assert r.capped_at.startswith("2026-01-10T23:59:30")


async def test_a_report_as_of_a_past_time_counts_no_later_accrual(service):
    """`--at` / `?at=` in the past read the running totals, later accruals and all: a report as of Jan 6
    said 29.01 over 4 calls (two of them made on Jan 8 and Jan 10), and `capped` for a cap reached later."""
    service.metered(metered("req_big", "600.00", ts("2026-01-10T23:59:30")))  # caps the revenue share
    await service.flush()
    jan6 = dt.datetime(2026, 1, 6, tzinfo=UTC)
    rs = await build_report(service.agreement("rs-fabrikam"), service.ledger, jan6, window_days=7)
    # req_1 and req_2 only: 15.00 + 6.00
    assert (Decimal(rs.accrued_exact), rs.calls, rs.requested, rs.status, rs.capped_at) == (
        21,
        2,
        "21.00",
        "accruing",
        None,
    )
    assert rs.remaining == "79.00"
    az = await build_report(service.agreement("azure-commit"), service.ledger, jan6, window_days=7)
    assert (Decimal(az.accrued_exact), az.calls) == (140, 2)
    # At NOW, after every accrual, the running totals are the answer as before.
    now = await build_report(service.agreement("rs-fabrikam"), service.ledger, NOW)
    assert (now.accrued, now.calls, now.status) == ("100.00", 5, "capped")


async def test_a_cap_of_zero_reads_not_started_before_its_term_and_capped_in_it(service):
    """A cap of 0 holds back everything: in its term the report says capped, but before the term it said
    capped too, for an agreement nothing could have accrued to yet."""
    [a] = parse_contracts(
        {
            "revenue_share": [
                {"id": "rs-zero", "rate": "0.5", "cap": "0", "starts_on": "2026-02-01", "ends_on": "2026-02-28"}
            ]
        }
    ).revenue_share
    before = await build_report(a, service.ledger, dt.datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC))
    assert (before.status, before.limit, before.remaining, before.accrued) == ("not started", "0.00", "0.00", "0.00")
    during = await build_report(a, service.ledger, dt.datetime(2026, 2, 1, tzinfo=UTC))
    assert during.status == "capped"


async def test_csv_has_the_documented_columns_and_values(service):
    reports = [await build_report(a, service.ledger, NOW) for a in service.agreements()]
    rows = list(csv.DictReader(io.StringIO(to_csv(reports))))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    by_id = {r["contract_id"]: r for r in rows}
    rs, az = by_id["rs-fabrikam"], by_id["azure-commit"]
    assert (rs["kind"], rs["limit"], rs["accrued"], rs["remaining"], rs["calls"]) == (
        "revenue_share",
        "100.00",
        "29.01",
        "70.99",
        "4",
    )
    assert (rs["daily_rate"], rs["projected_date"], rs["status"], rs["burn_vs_plan"]) == (
        "2.00",
        "2026-02-15",
        "accruing",
        "",
    )
    assert (az["planned_to_date"], az["burn_vs_plan"], az["status"], az["projected_date"]) == (
        "1000.00",
        "-0.2602",
        "behind",
        "",
    )


PLANNER_CONFIG = config(
    server=open_door(),
    providers={"azure-eastus": provider("openai", NOWHERE), "openai": provider("openai", NOWHERE)},
    deployments={
        "on-azure": deployment("azure-eastus", "m", commitment="azure-commit"),
        "on-openai": deployment("openai", "m"),
    },
    model_groups={"burn": group("on-openai", "on-azure", strategy="commitment-burn-down")},
)


def _order(source: CommitmentSource) -> list[str]:
    from multihome.config import Breaker
    from multihome.routing.breakers import Breakers
    from multihome.routing.catalog import Catalog
    from multihome.routing.latency import LatencyStats
    from multihome.routing.planner import Planner, RequestShape
    from multihome.schema.chat import parse_chat

    catalog = Catalog(typed(PLANNER_CONFIG))
    planner = Planner(Breakers(Breaker()), LatencyStats(alpha=1.0), source)
    parsed = parse_chat(msgspec.json.encode({"model": "burn", "messages": [{"role": "user", "content": "hi"}]}))
    plan = planner.plan(catalog.groups["burn"], RequestShape(parsed.needs, False, parsed.request, None))
    return [d.name for d in plan.ordered]


async def test_commitment_source_serves_burn_down_from_memory(service, migrated_url):
    assert _order(service) == ["on-azure", "on-openai"]  # the commitment is behind plan: burn it first
    # 10/31 of the period gone, 193.4333/3100 burned: 0.3225806 - 0.0623978 = 0.2601828 behind plan
    assert service.behind_plan("azure-commit") == pytest.approx(10 / 31 - 193.4333 / 3100, abs=1e-12)
    assert service.behind_plan("no-such-pool") == 0.0
    # Another replica's burn arrives with the next refresh.
    other = ContractsService(parse_contracts(CFG), migrated_url, clock=lambda: NOW.timestamp())
    await other.start()
    try:
        other.metered(metered("req_other", "1500.00", ts("2026-01-10T12:00")))
        await other.flush()
        assert service.behind_plan("azure-commit") == pytest.approx(0.2601828, abs=1e-6)  # not yet seen
        await service.refresh()
        # burned 1693.4333: 0.3225806 - 0.5462688 = -0.2236882: ahead of plan
        assert service.behind_plan("azure-commit") == pytest.approx(10 / 31 - 1693.4333 / 3100, abs=1e-12)
        assert _order(service) == ["on-openai", "on-azure"]  # now ahead of plan: config order wins
    finally:
        await other.close()


async def test_a_commitment_that_has_ended_is_no_longer_burned_down(migrated_url):
    """After its last day a commitment has no plan left to catch up with: its pool reads on plan (0.0), as an
    unknown one does. It used to read `1 - burned / amount` for ever, so commitment-burn-down kept sending
    calls first to a deployment whose commitment was over (their spend no longer burns it)."""
    now = [dt.datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp()]  # the commitment's last second
    svc = ContractsService(parse_contracts(CFG), migrated_url, clock=lambda: now[0])
    await svc.start()
    try:
        svc.metered(metered("req_1", "100.00", ts("2026-01-02T12:00")))
        await svc.flush()
        assert svc.behind_plan("azure-commit") == pytest.approx(1 - 100 / 3100, abs=1e-6)  # far behind: burn it
        assert _order(svc) == ["on-azure", "on-openai"]
        now[0] += 1  # 2026-02-01T00:00:00Z: the end instant
        assert svc.behind_plan("azure-commit") == 0.0
        assert _order(svc) == ["on-openai", "on-azure"]  # config order
        svc.metered(metered("req_2", "100.00", now[0]))  # accrues to it no more
        await svc.flush()
        assert svc.accrued("azure-commit") == Decimal("100.00")
        now[0] = dt.datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()  # a second before it starts
        assert svc.behind_plan("azure-commit") == 0.0
    finally:
        await svc.close()


# -- admin API ---------------------------------------------------------------------------------
ORG_ADMIN = Principal(tenant="*", subject="admin@example.com", source="static", roles=frozenset({"org-admin"}))
TENANT_ADMIN = Principal(tenant="ten_a", subject="ta", source="api_key", roles=frozenset({"tenant-admin"}))


async def _call(routes, method, path, principal=ORG_ADMIN, body=None, query=b""):
    sent, chunks = [], [body or b""]

    async def receive():
        return {"type": "http.request", "body": chunks.pop() if chunks else b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"method": method, "path": path, "query_string": query, "headers": []}
    await routes.handle(scope, receive, send, b"req_test", principal)
    headers = dict(sent[0]["headers"])
    return sent[0]["status"], headers[b"content-type"], sent[1]["body"]


async def test_admin_api_reports_json_and_csv_for_org_admins_only(service):
    routes = AdminApi(Services(contracts=service))
    status, ctype, body = await _call(
        routes, "GET", "/admin/v1/contracts/rs-fabrikam/report", query=b"at=2026-01-11T00:00:00Z"
    )
    data = json.loads(body)
    assert (status, data["accrued"], data["remaining"], data["projected_date"]) == (200, "29.01", "70.99", "2026-02-15")
    status, ctype, body = await _call(
        routes, "GET", "/admin/v1/contracts/azure-commit/report.csv", query=b"at=2026-01-11T00:00:00Z"
    )
    assert (status, ctype) == (200, b"text/csv; charset=utf-8")
    assert list(csv.DictReader(io.StringIO(body.decode())))[0]["burn_vs_plan"] == "-0.2602"
    status, _, body = await _call(routes, "GET", "/admin/v1/contracts")
    assert sorted(c["id"] for c in json.loads(body)["data"]) == ["azure-commit", "rs-fabrikam"]
    with pytest.raises(ApiError) as denied:
        await _call(routes, "GET", "/admin/v1/contracts", principal=TENANT_ADMIN)
    assert denied.value.status == 403
    with pytest.raises(ApiError) as missing:
        await _call(routes, "GET", "/admin/v1/contracts/nope/report")
    assert missing.value.status == 404


async def test_admin_api_creates_an_agreement_that_starts_accruing(service):
    routes = AdminApi(Services(contracts=service))
    new = {
        "kind": "revenue_share",
        "id": "rs-new",
        "rate": "0.5",
        "cap": "1.00",
        "starts_on": "2026-01-01",
        "ends_on": "2026-12-31",
    }
    status, _, body = await _call(routes, "POST", "/admin/v1/contracts", body=msgspec.json.encode(new))
    assert status == 201 and json.loads(body)["rate"] == "0.5"
    with pytest.raises(ApiError) as dup:
        await _call(routes, "POST", "/admin/v1/contracts", body=msgspec.json.encode({**new, "id": "azure-commit"}))
    assert dup.value.status == 409
    with pytest.raises(ApiError) as bad:
        await _call(routes, "POST", "/admin/v1/contracts", body=msgspec.json.encode({**new, "id": "x", "rate": "1.5"}))
    assert bad.value.status == 400
    service.metered(metered("req_new", "10.00", ts("2026-03-01T00:00")))  # 5.00 requested, cap 1.00
    await service.flush()
    assert service.accrued("rs-new") == Decimal("1.00")
