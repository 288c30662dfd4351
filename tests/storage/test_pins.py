"""Stateful-work pins in storage (SQLite and PostgreSQL): created with an admin event, in the
snapshot until revoked, refused when their fields are wrong, deleted with their tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from multihome.storage import Invalid, NotFound

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


async def test_a_pin_is_stored_in_the_snapshot_and_revoked_with_events(store):
    tenant = await store.create_tenant("acme", actor="admin")
    pin = await store.create_pin(
        tenant.id,
        providers=["azure"],
        data_zones=["eu"],
        work=["agent_step"],
        valid_from=NOW,
        valid_until=NOW + timedelta(days=30),
        note="contract c-1",
        actor="admin",
    )
    assert pin.id.startswith("pin_") and pin.valid_until == NOW + timedelta(days=30)
    assert await store.get_pin(tenant.id, pin.id) == pin
    assert (await store.snapshot()).stateful_pins == (pin,)

    revoked = await store.revoke_pin(tenant.id, pin.id, actor="admin")
    assert revoked.revoked_at is not None
    assert await store.revoke_pin(tenant.id, pin.id, actor="admin") == revoked  # idempotent: one event
    assert (await store.snapshot()).stateful_pins == ()
    assert await store.page_pins(tenant.id, 1000) == []
    assert await store.page_pins(tenant.id, 1000, include_revoked=True) == [revoked]
    events = [e for e in await store.admin_events(tenant.id) if e.object_type == "stateful_pin"]
    assert [e.action for e in events] == ["stateful_pin.create", "stateful_pin.revoke"]
    assert events[0].detail["providers"] == ["azure"] and events[0].detail["work"] == ["agent_step"]


async def test_bad_pins_are_refused_and_other_tenants_pins_are_not_found(store):
    a = await store.create_tenant("a", actor="admin")
    b = await store.create_tenant("b", actor="admin")
    bad = [
        {"providers": None, "data_zones": None},
        {"providers": []},
        {"providers": ["x"] * 101},
        {"providers": ["x"], "valid_until": NOW - timedelta(seconds=1)},
        {"providers": ["x"], "work": ["everything"]},
    ]
    for fields in bad:
        args = {"providers": None, "data_zones": None, "work": None, "valid_from": NOW, "valid_until": None, **fields}
        with pytest.raises(Invalid):
            await store.create_pin(a.id, **args, actor="admin")
    pin = await store.create_pin(
        a.id, providers=["x"], data_zones=None, work=None, valid_from=NOW, valid_until=None, actor="admin"
    )
    with pytest.raises(NotFound):
        await store.get_pin(b.id, pin.id)
    with pytest.raises(NotFound):
        await store.revoke_pin(b.id, pin.id, actor="admin")
    with pytest.raises(NotFound):
        await store.create_pin(
            "ten_missing", providers=["x"], data_zones=None, work=None, valid_from=NOW, valid_until=None, actor="a"
        )
    await store.delete_tenant(a.id, actor="admin")
    assert (await store.snapshot()).stateful_pins == ()
