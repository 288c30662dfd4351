"""What each console page shows, read through the admin API's own routes (`AdminApi.call`).

Every figure on a page comes from the route an HTTP client of the admin API would call, run with the
viewer's own principal: the same RBAC table decides (a tenant-admin asking for another tenant's page
gets the admin API's 403), the same queries answer, and a change writes the same audit event. What the
admin API does not hold (the catalog, breakers, route explain) comes from the objects that serve calls.
Nothing here formats HTML: the templates do, with autoescaping on.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace
from typing import Any, Protocol
from urllib.parse import urlencode

import msgspec

from ...contracts import scenario
from ...policy.pins import MEMORY_EMBEDDING, WORK_KINDS
from ...schema.errors import ApiError, echo
from ...schema.principal import ORG_ADMIN, Principal
from ...storage.errors import NotFound
from ..admin import pages
from ..admin.dispatch import AdminApi
from ..admin.rbac import READ, authorize, may_grant
from ..asgi import Scope
from ..pipeline import Call
from .charts import bars, buckets, line, stacked, timeline

UTC = dt.UTC
GROUPINGS = ("tenant", "team", "key", "model_group", "deployment")
TENANT_GROUPINGS = ("team", "key", "model_group", "deployment")
AUDIT_KINDS = ("call", "policy_denial", "admin_change", "call_started", "kms", "agent_step")
GROWTHS = scenario.GROWTH


class Explainer(Protocol):
    """The route-explain logic of `POST /v1/route/explain` (api/openai/explain.py)."""

    def explain(self, call: Call, body: bytes) -> dict[str, Any]: ...


@dataclass
class Parts:
    """What the console reads besides the admin API: the serving objects, for Routing."""

    admin: AdminApi
    catalog: Any  # routing.catalog.Catalog: deployments and model groups as configured
    breakers: Any  # routing.breakers.Breakers: each deployment's breaker now
    explainer: Explainer | None = None


def plain(value: Any) -> Any:
    """An admin answer (structs, datetimes, Decimals) as built-ins a template can read."""
    return msgspec.to_builtins(value)


def org(viewer: Principal) -> bool:
    return ORG_ADMIN in viewer.roles


class Views:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.admin = parts.admin

    async def _call(
        self, name: str, viewer: Principal, query: Mapping[str, str] | None = None, body: Any = None, **params: str
    ) -> Any:
        return plain(await self.admin.call(name, viewer, dict(params), dict(query or {}), body))

    async def _optional(self, name: str, viewer: Principal, **kw: Any) -> Any:
        """A route whose part of the gateway may be off (no audit trail, no storage): None then."""
        try:
            return await self._call(name, viewer, **kw)
        except ApiError as err:
            if err.status == 501:
                return None
            raise

    async def tenants(self, viewer: Principal) -> list[dict[str, Any]]:
        page = await self._optional("list_tenants", viewer)  # no storage: no tenants to pick from
        listed: list[dict[str, Any]] = page["data"] if page is not None else []
        return listed

    async def _usage(self, viewer: Principal, tenant: str | None, query: dict[str, str]) -> dict[str, Any]:
        """The usage route for the viewer: org-wide (org-admin, no tenant chosen) or one tenant's."""
        if tenant is None and org(viewer):
            out: dict[str, Any] = await self._call("org_usage", viewer, query)
        else:
            out = await self._call("tenant_usage", viewer, query, tenant=tenant or viewer.tenant)
        return out

    # -- Overview -----------------------------------------------------------------------------------

    async def overview(self, viewer: Principal, q: dict[str, str]) -> dict[str, Any]:
        tenant = _tenant(viewer, q)
        since = (dt.datetime.now(UTC) - dt.timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
        window = {"start": since.isoformat()}
        by_group = (await self._usage(viewer, tenant, {"group_by": "model_group", **window}))["data"]
        by_dep = (await self._usage(viewer, tenant, {"group_by": "deployment", **window}))["data"]
        hourly = (await self._usage(viewer, tenant, {"group_by": "model_group", "interval": "hour", **window}))["data"]
        hours = buckets(since, dt.datetime.now(UTC), "hour")
        totals = {
            "calls": sum(e["calls"] for e in by_group),
            "errors": sum(e["errors"] for e in by_group),
        }
        latency = [(e["model_group"], e["latency_ms_avg"]) for e in by_group]
        return {
            "tenant": tenant,
            "by_group": by_group,
            "by_deployment": by_dep,
            "totals": totals,
            "since": since,
            "calls_chart": stacked(hourly, "model_group", "calls", "calls per hour (UTC)", axis=hours),
            "errors_chart": stacked(hourly, "model_group", "errors", "errors per hour (UTC)", axis=hours),
            "latency_chart": bars([n for n, _ in latency], [v for _, v in latency], "average latency (ms)"),
        }

    # -- Routing ------------------------------------------------------------------------------------

    def deployments(self) -> list[dict[str, Any]]:
        breakers = self.parts.breakers.snapshot()
        out = []
        for name, d in self.parts.catalog.deployments.items():
            price = d.price
            out.append(
                {
                    "name": name,
                    "provider": d.provider,
                    "model": d.upstream_model,
                    "region": d.region,
                    "data_zone": d.data_zone,
                    "capabilities": sorted(d.capabilities),
                    "context_window": d.context_window,
                    "price": None if price is None else f"{price.input:g} / {price.output:g} {price.currency}",
                    "commitment": d.commitment,
                    "breaker": breakers.get(name, {"state": "closed", "consecutive_failures": 0}),
                }
            )
        return out

    def groups(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "deployments": [d.name for d in g.deployments],
                "strategy": g.strategy,
                "retries": g.policy.retries,
                "fail_over_on": list(g.policy.fail_over_on),
            }
            for name, g in self.parts.catalog.groups.items()
        ]

    async def recent(self, viewer: Principal, kind: str, limit: int, tenant: str | None = None) -> list[dict[str, Any]]:
        """The newest `limit` events of `kind` in the audit trail from the last day, newest first."""
        since = dt.datetime.now(UTC) - dt.timedelta(days=1)
        query = {"kind": kind, "since": since.isoformat(), "limit": "1000"}
        if tenant:
            query["tenant"] = tenant
        page = await self._optional("trail_events", viewer, query=query)
        if page is None:
            return []
        events: list[dict[str, Any]] = sorted(page["data"], key=lambda e: e.get("time", 0), reverse=True)
        return events[:limit]

    async def routing(self, viewer: Principal, q: dict[str, str]) -> dict[str, Any]:
        tenant = None if org(viewer) else viewer.tenant
        calls = await self.recent(viewer, "call", 30, tenant)
        denials = await self.recent(viewer, "policy_denial", 10, tenant)
        return {
            "deployments": self.deployments(),
            "groups": self.groups(),
            "calls": calls,
            "denials": denials,
            "audit_on": self.admin.services.audit_reader is not None,
            "explain_form": {"tenant": q.get("tenant") or ("" if org(viewer) else viewer.tenant)},
            "work_kinds": WORK_KINDS,
        }

    async def explain(self, viewer: Principal, fields: dict[str, str], scope: Scope) -> dict[str, Any]:
        """Route explain for a tenant's caller (a key of it, or a described member), by the same planner
        as `POST /v1/route/explain`."""
        tenant = fields.get("tenant") or viewer.tenant
        authorize(viewer, READ, tenant)
        model = fields.get("model", "")
        if model not in self.parts.catalog.groups:
            raise ApiError(404, f"Unknown model group '{echo(model)}'.", param="model", code="model_not_found")
        subject = Principal(tenant=tenant, subject="console-explain", source="explain", team=fields.get("team") or None)
        key_id = fields.get("key_id")
        if key_id:
            from ...identity.authenticator import principal_of_key

            # Read as the viewer through the admin API: an unknown key is its 404 (the answer to show).
            key = await self._call("get_key", viewer, tenant=tenant, id=key_id)
            subject = principal_of_key(SimpleNamespace(**key))
        work = fields.get("work") or ""  # a kind of stateful work (policy/pins.py): the tenant's pins narrow the plan
        body: dict[str, Any]
        if work == MEMORY_EMBEDDING:  # a memory embedding is an embeddings call (docs/memory.md)
            body = {"model": model, "input": "route explain"}
        else:
            body = {"model": model, "messages": [{"role": "user", "content": "route explain"}]}
            if fields.get("stream"):
                body["stream"] = True
            if fields.get("tools"):
                body["tools"] = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
        query = urlencode({"work": work}).encode() if work else b""
        call = Call({"type": "http", "headers": [], "path": "/v1/route/explain", "query_string": query}, b"console")
        call.principal = subject
        if self.parts.explainer is None:
            raise ApiError(501, "Route explain is not served by this gateway.", code="not_configured")
        return self.parts.explainer.explain(call, msgspec.json.encode(body))

    # -- Tenants, teams, keys, policies, entitlements, budgets, rate limits -------------------------

    async def tenant(self, viewer: Principal, tenant_id: str) -> dict[str, Any]:
        t = await self._call("get_tenant", viewer, tenant=tenant_id)  # 403 for another tenant's admin
        pages = [
            await self._call(name, viewer, tenant=tenant_id)
            for name in ("list_keys", "list_teams", "list_policies", "list_entitlements", "list_budgets")
        ]
        keys, teams, policies, entitlements, budgets = (page["data"] for page in pages)
        # Stored rows that cannot be read (docs/storage.md): which, and what is wrong, never their values.
        unreadable = [u for page in pages for u in page.get("unreadable", ())]
        for u in unreadable:  # a key's Revoke only where the viewer may revoke it (api/admin/keys.py)
            u["revocable"] = u["table"] == "api_keys" and await self._may_revoke_unreadable(viewer, tenant_id, u["id"])
        rates = await self.rate_limits(tenant_id)
        today = dt.date.today()
        return {
            "tenant": t,
            # A key holding a role the viewer may not grant is not the viewer's to revoke (the API says 403).
            "keys": [{**k, "revocable": not k.get("revoked_at") and may_grant(viewer, k["roles"])} for k in keys],
            # Keys, teams and entitlements come a page at a time (api/admin/pages.py); a tenant holds at most 1,000
            # policies: one page.
            "keys_more": pages[0].get("has_more", False),
            "teams_more": pages[1].get("has_more", False),
            "entitlements_more": pages[3].get("has_more", False),
            "grantable": [r for r in ("member", "tenant-admin", "auditor", "org-admin") if may_grant(viewer, (r,))],
            "teams": teams,
            "policies": policies,
            "entitlements": [{**e, "state": _term(e, today)} for e in entitlements],
            "entitlement_chart": timeline(
                [
                    (f"{e['model_group']} ({e['id']})", e["starts_on"], e["ends_on"], bool(e["revoked_at"]))
                    for e in entitlements
                ],
                today,
            ),
            "budgets": [{**b, "used_pct": _pct(b)} for b in budgets],
            "unreadable": unreadable,
            "rates": rates,
            "model_groups": sorted(self.parts.catalog.groups),
        }

    async def _may_revoke_unreadable(self, viewer: Principal, tenant_id: str, key_id: str) -> bool:
        """A key whose row cannot be read: an org-admin revokes it; a tenant-admin if its roles, read on their
        own, are ones it could grant."""
        if org(viewer):
            return True
        try:
            roles = await self.admin.services.store.key_roles(tenant_id, key_id)
        except NotFound:  # gone since the list was read
            return False
        return roles is not None and may_grant(viewer, roles)

    async def rate_limits(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's rate limits with what is left of this minute (as /metrics reports headroom)."""
        from ...metering.headroom import headroom

        metering = self.admin.services.metering
        if metering is None:
            return []
        _, rates = await headroom(metering.limiter, [tenant_id])
        limits = {(r.scope, r.id): r for r in metering.limiter.cfg.rate_limits}
        out = []
        for (scope, ident, kind, tenant), left in rates:
            if tenant not in (tenant_id, ""):  # another tenant's own (a tenant rule naming it); "": a deployment's
                continue
            rule = limits.get((scope, ident)) or limits.get((scope, "*"))
            limit = getattr(rule, "requests_per_minute" if kind == "requests" else "tokens_per_minute", None)
            out.append({"scope": scope, "id": ident, "kind": kind, "limit": limit, "left": left})
        return out

    async def create_key(self, viewer: Principal, tenant_id: str, f: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {"name": f.get("name", ""), "roles": [f.get("role") or "member"]}
        if f.get("team_id"):
            body["team_id"] = f["team_id"]
        if f.get("expires_in_days"):
            body["expires_in_days"] = _number(f["expires_in_days"], "expires_in_days")
        created: dict[str, Any] = await self._call("create_key", viewer, body=body, tenant=tenant_id)
        return created

    async def revoke_key(self, viewer: Principal, tenant_id: str, key_id: str) -> None:
        await self._call("revoke_key", viewer, tenant=tenant_id, id=key_id)

    async def create_team(self, viewer: Principal, tenant_id: str, f: dict[str, str]) -> None:
        await self._call("create_team", viewer, body={"name": f.get("name", "")}, tenant=tenant_id)

    async def create_tenant(self, viewer: Principal, f: dict[str, str]) -> dict[str, Any]:
        created: dict[str, Any] = await self._call("create_tenant", viewer, body={"name": f.get("name", "")})
        return created

    # -- Spend --------------------------------------------------------------------------------------

    async def spend(self, viewer: Principal, q: dict[str, str]) -> dict[str, Any]:
        tenant = _tenant(viewer, q)
        allowed = GROUPINGS if tenant is None else TENANT_GROUPINGS
        group_by = q.get("group_by") or ("tenant" if tenant is None else "model_group")
        if group_by not in allowed:
            group_by = allowed[0]
        interval = "hour" if q.get("interval") == "hour" else "day"
        days = 2 if interval == "hour" else 30
        start = q.get("start") or (dt.datetime.now(UTC) - dt.timedelta(days=days)).date().isoformat() + "T00:00:00Z"
        query = {"group_by": group_by, "interval": interval, "start": start}
        if q.get("end"):
            query["end"] = q["end"]
        # The first page of each (api/admin/pages.py: 1,000 entries): a key is an entry each, per day too.
        series_page = await self._usage(viewer, tenant, query)
        series = series_page["data"]
        first = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
        last = dt.datetime.fromisoformat(q["end"].replace("Z", "+00:00")) if q.get("end") else dt.datetime.now(UTC)
        axis = buckets(
            first if first.tzinfo else first.replace(tzinfo=UTC),
            last if last.tzinfo else last.replace(tzinfo=UTC),
            interval,
        )
        totals_page = await self._usage(viewer, tenant, {k: v for k, v in query.items() if k != "interval"})
        totals = sorted(totals_page["data"], key=lambda e: -Decimal(e["cost"]))  # biggest first, to read
        return {
            "tenant": tenant,
            "group_by": group_by,
            "groupings": allowed,
            "interval": interval,
            "start": start,
            "end": q.get("end", ""),
            "series": series,
            "totals": totals,
            "usage_more": series_page["has_more"] or totals_page["has_more"],
            "usage_page": pages.MAX_PAGE,
            "chart": stacked(
                series, group_by, "cost", f"cost per {interval} (UTC)", money=True, axis=axis, interval=interval
            ),
        }

    @staticmethod
    def spend_csv(view: dict[str, Any]) -> bytes:
        out = io.StringIO()
        group_by = view["group_by"]
        fields = ["bucket", group_by, "currency", "calls", "errors", "prompt_tokens", "completion_tokens"]
        fields += ["cached_tokens", "reasoning_tokens", "cost", "latency_ms_avg"]
        writer = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in view["series"]:
            writer.writerow({k: _cell(row.get(k)) for k in fields})
        return out.getvalue().encode()

    # -- Contracts ----------------------------------------------------------------------------------

    async def contracts(self, viewer: Principal, q: dict[str, str]) -> dict[str, Any]:
        listed = await self._optional("list_contracts", viewer)
        growth = next((g for g in GROWTHS if g == q.get("growth")), "flat")
        rate = _number(q.get("rate") or "0", "rate") / 100.0
        out = []
        for c in (listed or {"data": []})["data"]:
            try:
                report = await self._call("contract_report", viewer, id=c["id"])
            except ApiError as err:  # its ledger cannot be read: say so on its card, show the others
                if err.body.code != "unreadable_row":
                    raise
                out.append({"contract": c, "report": None, "projection": None, "unreadable": err.body.message})
                continue
            report.update(_exact(c, report))
            projection = await self._projection(c["id"], report, growth, rate)
            out.append({"contract": c, "report": report, "projection": projection})
        return {
            "contracts": out,
            "unreadable": (listed or {}).get("unreadable", []),
            "growth": growth,
            "rate": rate * 100,
            "growths": GROWTHS,
            "on": listed is not None,
        }

    async def _projection(self, contract_id: str, report: dict[str, Any], growth: str, rate: float) -> Any:
        """The scenario `multihome contracts project` draws, as a chart of the packaged library."""
        contracts = self.admin.services.contracts
        agreement = contracts.agreement(contract_id)
        now = dt.datetime.now(UTC)
        try:
            p = scenario.project(
                agreement,
                accrued_now=float(report["accrued_exact"]),
                base_daily=float(report["daily_rate_exact"]),
                growth=growth,
                growth_rate=rate,
                now=now,
                history=scenario.cumulative_history(await contracts.ledger.daily(contract_id)),
            )
        except (ValueError, KeyError):
            return None
        return {"summary": p.headline, "label": p.label, "chart": _scenario_chart(p)}

    # -- Audit --------------------------------------------------------------------------------------

    async def audit(self, viewer: Principal, q: dict[str, str]) -> dict[str, Any]:
        query = {k: q[k] for k in ("request_id", "tenant", "kind", "since", "until", "after") if q.get(k)}
        query["limit"] = "100"
        page = await self._optional("trail_events", viewer, query=query)
        return {
            "q": q,
            "kinds": AUDIT_KINDS,
            "events": page["data"] if page else [],
            "next": urlencode({**query, "after": page["next_cursor"]}) if page and page.get("next_cursor") else None,
            "on": page is not None,
        }

    async def verification(self, viewer: Principal) -> Any:
        """The trail's verification (it reads the whole trail: the Audit page loads it after the events). An
        org-admin's only (api/admin/audit.py): another viewer is told so, "org" instead of an answer."""
        if not org(viewer):
            return "org"
        return await self._optional("verify_trail", viewer)

    # -- State --------------------------------------------------------------------------------------

    async def state(self, viewer: Principal, q: dict[str, str]) -> dict[str, Any]:
        tenant = _tenant(viewer, q)
        if tenant:
            summary = await self._optional("tenant_state", viewer, tenant=tenant)
        else:
            summary = await self._optional("org_state", viewer)
        runs = namespaces = None  # per tenant only: an org-admin picks one
        if tenant:
            runs = await self._optional("list_agent_runs", viewer, query={"limit": "50"}, tenant=tenant)
            namespaces = await self._optional("list_memory_namespaces", viewer, tenant=tenant)
        return {
            "tenant": tenant,
            "summary": summary,
            "runs": runs["data"] if runs is not None else None,
            "runs_more": bool(runs and runs["has_more"]),
            "namespaces": namespaces["data"] if namespaces is not None else None,
            "namespaces_more": bool(namespaces and namespaces["has_more"]),  # the first page only (api/admin/pages.py)
        }

    async def run(self, viewer: Principal, run_id: str, q: dict[str, str]) -> dict[str, Any]:
        """One agent run with its steps (the admin API answers 403 or 404 for another tenant's)."""
        tenant = q.get("tenant") or viewer.tenant
        if not tenant:
            raise ApiError(400, "Name the run's tenant: ?tenant=<tenant id>.", param="tenant", code="missing_parameter")
        run = await self._call("get_agent_run", viewer, tenant=tenant, id=run_id)
        return {"tenant": tenant, "run": run}


def _exact(contract: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The limit and what remains of it unrounded (the report rounds to cents; a small contract needs more)."""
    limit = contract.get("cap") if contract.get("kind") == "revenue_share" else contract.get("amount")
    if limit is None:
        return {"limit_exact": None, "remaining_exact": None}
    remaining = max(Decimal(0), Decimal(str(limit)) - Decimal(report["accrued_exact"]))
    return {"limit_exact": str(limit), "remaining_exact": str(remaining)}


def _tenant(viewer: Principal, q: Mapping[str, str]) -> str | None:
    """The tenant a page is about: the one asked for (the admin API refuses another tenant's viewer), else
    the viewer's own; None for an org-admin who asked for none (the whole organisation)."""
    return q.get("tenant") or (None if org(viewer) else viewer.tenant)


def _term(e: dict[str, Any], today: dt.date) -> str:
    if e.get("revoked_at"):
        return "revoked"
    starts, ends = dt.date.fromisoformat(e["starts_on"]), dt.date.fromisoformat(e["ends_on"])
    if today < starts:
        return "not started"
    if today > ends:
        return "expired"
    left = (ends - today).days
    return f"live, {left} day{'s' if left != 1 else ''} left"


def _pct(b: dict[str, Any]) -> float:
    try:
        amount = Decimal(b["amount"])
        return float(min(Decimal(100), Decimal(b["spent_or_reserved"]) * 100 / amount)) if amount else 100.0
    except (InvalidOperation, KeyError, TypeError):
        return 0.0


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ApiError(400, f"{name} must be a number.", param=name, code="invalid_value") from None


def _cell(value: Any) -> Any:
    """A CSV cell: a leading =, +, - or @ would be a formula to a spreadsheet; quote it as text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return "" if value is None else value


def _scenario_chart(p: scenario.Projection) -> dict[str, Any]:
    """Actual (the ledger, cumulative by day), the projection from now to the end, and the limit."""
    start = p.start or p.now
    span = (p.until - start).total_seconds()
    days = [start + dt.timedelta(seconds=span * i / 60) for i in range(61)]
    history = dict(p.history)
    actual: list[float | None] = []
    run = 0.0
    for d in days:
        if d > p.now:
            actual.append(None)
            continue
        run = max([v for day, v in history.items() if day <= d.date()] or [run])
        actual.append(round(run, 6))
    projected = [round(p.value_at(d), 6) if d >= p.now else None for d in days]
    series = [("actual (ledger)", actual), ("projected", projected)]
    if p.limit is not None:
        series.append(("cap" if p.kind == "revenue_share" else "commitment", [p.limit] * len(days)))
    return line([d.date().isoformat() for d in days], series, p.currency)
