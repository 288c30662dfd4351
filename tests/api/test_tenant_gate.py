"""The tenant gate (api/tenant_gate.py) on its own: a tenant's calls run `running` at once, 8 times as many more
wait, the next is a 429 at once, another tenant's run meanwhile, and a call that ends lets a waiting one in."""

from __future__ import annotations

import asyncio

import pytest

from multihome.api.tenant_gate import WAITING_FACTOR, TenantGate
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal

pytestmark = pytest.mark.anyio


class _Call:
    def __init__(self, tenant: str) -> None:
        self.principal = Principal(tenant=tenant, subject="k", source="api_key")


async def test_a_tenant_runs_its_share_waits_past_it_and_is_refused_past_the_wait():
    gate = TenantGate(2, "x.max_concurrent_per_tenant")
    release = asyncio.Event()
    ran: list[str] = []

    async def handler(call, receive, send):
        ran.append(call.principal.tenant)
        await release.wait()

    guarded = gate.guard(handler)
    held = [asyncio.ensure_future(guarded(_Call("acme"), None, None)) for _ in range(2 * (1 + WAITING_FACTOR))]
    await asyncio.sleep(0)
    assert ran == ["acme", "acme"]  # two run, the rest wait
    with pytest.raises(ApiError) as refused:
        await guarded(_Call("acme"), None, None)
    assert refused.value.status == 429 and refused.value.body.code == "too_many_concurrent_requests"
    assert "x.max_concurrent_per_tenant" in refused.value.body.message

    other = asyncio.ensure_future(guarded(_Call("other"), None, None))
    await asyncio.sleep(0)
    assert ran == ["acme", "acme", "other"]  # not behind acme's
    release.set()
    await asyncio.wait_for(asyncio.gather(*held, other), 30)
    assert ran.count("acme") == 2 * (1 + WAITING_FACTOR)  # the waiting ones ran in turn
    assert gate._calls.held == {} and gate._calls.turns == {}  # nothing kept for tenants with no call


async def test_no_bound_leaves_the_handler_as_it_is():
    async def handler(call, receive, send):
        return None

    assert TenantGate(None, "x").guard(handler) is handler
