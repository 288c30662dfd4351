"""The demo's sample organisation, made through the admin API as an operator would, and a little traffic.

Two tenants: Acme Retail (a team, an app key, a tenant-admin key, a monthly hard budget, an exclusive
entitlement to gpt-4o-mini) and Globex Bank (an app key, an auditor key, an EU-only egress policy). The
traffic that follows goes through the front door with those keys: Acme's calls are served on the
primary, Globex's are kept in the EU, and Globex is denied where the policy or the entitlement says so,
so every console page has something to show. Contracts (a revenue share with a cap, a commitment) are
in the demo's config, as an organisation would declare them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import aiohttp

NAMES = {"acme": "Acme Retail", "globex": "Globex Bank"}  # short name -> the tenant's name (`--tenant` takes it)


@dataclass
class SampleOrg:
    tenants: dict[str, str] = field(default_factory=dict)  # short name -> tenant id
    keys: dict[str, str] = field(default_factory=dict)  # name -> secret (printed for the operator, never logged)
    calls: int = 0
    denied: int = 0


class _Admin:
    def __init__(self, http: aiohttp.ClientSession, base: str, admin_key: str) -> None:
        self.http, self.base = http, base + "/admin/v1"
        self.headers = {"authorization": f"Bearer {admin_key}"}

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(self.base + path, json=body, headers=self.headers) as resp:
            out: dict[str, Any] = await resp.json()
            if resp.status >= 300:
                raise RuntimeError(f"demo set-up: POST {path}: {resp.status} {out}")
            return out


async def build_org(http: aiohttp.ClientSession, root: str, admin_key: str) -> SampleOrg:
    """root: http://host:port. Creates the tenants, keys, policy, entitlement and budget."""
    admin, org = _Admin(http, root, admin_key), SampleOrg()
    acme = (await admin.post("/tenants", {"name": NAMES["acme"]}))["id"]
    globex = (await admin.post("/tenants", {"name": NAMES["globex"]}))["id"]
    org.tenants = {"acme": acme, "globex": globex}
    checkout = (await admin.post(f"/tenants/{acme}/teams", {"name": "checkout"}))["id"]
    for name, tenant, body in (
        ("acme-app", acme, {"name": "checkout-service", "team_id": checkout}),
        ("acme-admin", acme, {"name": "acme-ops", "roles": ["tenant-admin"]}),
        ("globex-app", globex, {"name": "risk-assistant"}),
        ("globex-auditor", globex, {"name": "compliance", "roles": ["auditor"]}),
    ):
        org.keys[name] = (await admin.post(f"/tenants/{tenant}/keys", body))["key"]
    await admin.post(
        f"/tenants/{globex}/policies",
        {
            "scope": "tenant",
            "description": "EU only: data stays in the EU data zone",
            "rules": [{"effect": "allow", "data_zones": ["EU"]}],
        },
    )
    today = dt.date.today()
    await admin.post(
        f"/tenants/{acme}/entitlements",
        {
            "model_group": "gpt-4o-mini",
            "starts_on": (today - dt.timedelta(days=30)).isoformat(),
            "ends_on": (today + dt.timedelta(days=60)).isoformat(),
            "exclusive": True,
            "note": "launch partner: exclusive for 90 days",
        },
    )
    await admin.post(
        f"/tenants/{acme}/budgets",
        {"scope": "tenant", "amount": "5.00", "currency": "USD", "period": "month", "mode": "hard"},
    )
    return org


async def drive_traffic(http: aiohttp.ClientSession, base: str, org: SampleOrg) -> None:
    """A few calls per tenant through the front door (base: http://host:port/v1)."""
    chat = "/chat/completions"
    plan = [
        ("acme-app", chat, "gpt-4o", 4),
        ("acme-app", chat, "gpt-4o-mini", 2),
        ("acme-app", "/embeddings", "text-embedding-3-small", 1),
        ("globex-app", chat, "gpt-4o", 3),  # EU only: served in westeurope
        ("globex-app", chat, "llama-3.1-8b", 1),  # no EU deployment: denied by the policy
        ("globex-app", chat, "gpt-4o-mini", 1),  # Acme's exclusive entitlement: denied
    ]
    for key, path, model, times in plan:
        headers = {"authorization": f"Bearer {org.keys[key]}"}
        for i in range(times):
            if path == chat:
                body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": f"demo call {i}"}]}
            else:
                body = {"model": model, "input": f"demo text {i}"}
            async with http.post(base + path, json=body, headers=headers) as resp:
                await resp.read()
                org.calls += 1
                org.denied += resp.status == 403
    # The stateful runtime: a conversation and two stored responses in it (the State page counts them).
    headers = {"authorization": f"Bearer {org.keys['acme-app']}"}
    first = [{"type": "message", "role": "user", "content": "Plan a product launch."}]
    async with http.post(base + "/conversations", json={"items": first}, headers=headers) as resp:
        conversation = (await resp.json())["id"]
    for text in ("Draft the announcement.", "Now shorten it."):
        turn = {"model": "gpt-4o", "input": text, "conversation": conversation, "store": True}
        async with http.post(base + "/responses", json=turn, headers=headers) as resp:
            await resp.read()
            org.calls += 1
