"""Stateful-work pins as policy reads them: which deployments a pin admits, when it is live, what
`Pinned` removes and says, and the checks a pin must pass."""

from __future__ import annotations

import datetime as dt

from multihome.policy.model import DeploymentFacts
from multihome.policy.pins import WORK_KINDS, PinIndex, StatefulPin, compile_pin, pin_problems

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
AZ = DeploymentFacts("az-eu", "azure", "azure", "westeurope", "EU")
BR = DeploymentFacts("br-us", "bedrock", "bedrock", "us-east-1", "us")
NOZONE = DeploymentFacts("self", "selfhosted", "openai", None, None)


def pin(**fields) -> StatefulPin:
    return StatefulPin(**{"id": "pin_1", "tenant_id": "t", "valid_from": NOW - HOUR, **fields})


def test_a_pin_admits_what_every_listed_dimension_lists():
    azure, eu = compile_pin(pin(providers=["azure"])), compile_pin(pin(data_zones=["eu"]))
    assert azure.admits(AZ) and not azure.admits(BR)
    assert eu.admits(AZ)  # zones compare case-insensitively
    assert not eu.admits(NOZONE)  # an unknown zone is outside: fail closed
    assert not compile_pin(pin(providers=["azure"], data_zones=["us"])).admits(AZ)  # both must hold


def test_only_live_pins_covering_the_work_apply():
    index = PinIndex(
        [
            pin(id="pin_a", providers=["azure"], valid_until=NOW + HOUR),
            pin(id="pin_old", providers=["bedrock"], valid_from=NOW - 3 * HOUR, valid_until=NOW - HOUR),
            pin(id="pin_bg", data_zones=["eu"], work=["background"]),
        ]
    )
    assert index.applying("other", "agent_step", NOW) is None  # a tenant without pins: one dict lookup
    step = index.applying("t", "agent_step", NOW)
    assert step is not None and [p.pin.id for p in step.pins] == ["pin_a"]
    background = index.applying("t", "background", NOW)
    assert background is not None and [p.pin.id for p in background.pins] == ["pin_a", "pin_bg"]
    assert index.applying("t", "agent_step", NOW + 2 * HOUR) is None  # pin_a ended: nothing applies
    assert index.applying("t", "agent_step", NOW - 4 * HOUR) is None  # before either began


def test_a_pin_is_live_from_valid_from_up_to_not_including_valid_until():
    """docs/policy.md: `valid_until` is exclusive; a pin that ends stops applying at that moment."""
    index = PinIndex([pin(providers=["azure"], valid_from=NOW, valid_until=NOW + HOUR)])
    assert index.applying("t", "agent_step", NOW) is not None
    assert index.applying("t", "agent_step", NOW + HOUR - dt.timedelta(microseconds=1)) is not None
    assert index.applying("t", "agent_step", NOW + HOUR) is None
    assert index.applying("t", "agent_step", NOW - dt.timedelta(microseconds=1)) is None


def test_under_several_live_pins_a_deployment_must_be_inside_all_of_them():
    az_us = DeploymentFacts("az-us", "azure", "azure", "eastus", "US")
    pinned = PinIndex([pin(id="pin_az", providers=["azure"]), pin(id="pin_eu", data_zones=["EU"])]).applying(
        "t", "agent_step", NOW
    )
    assert pinned is not None
    removed = pinned.split([AZ, BR, az_us], frozenset({"az-eu", "br-us", "az-us"}))
    assert set(removed) == {"br-us", "az-us"} and pinned.kept  # az-eu, inside both, is kept
    assert "pin_eu" in removed["az-us"]  # inside pin_az, outside pin_eu: named by the pin it is outside


def test_pinned_removes_only_allowed_deployments_outside_every_pin_and_says_which():
    pinned = PinIndex([pin(providers=["azure"])]).applying("t", "background", NOW)
    assert pinned is not None
    removed = pinned.split([AZ, BR, NOZONE], frozenset({"az-eu", "br-us"}))
    assert set(removed) == {"br-us"} and pinned.kept  # `self` was not allowed by policy: not the pin's doing
    assert "pin_1" in removed["br-us"] and "background" in removed["br-us"] and "bedrock" in removed["br-us"]
    assert pinned.to_dict()["removed"] == removed and "providers [azure]" in pinned.describe()
    nothing = PinIndex([pin(providers=["azure"])]).applying("t", "background", NOW)
    assert nothing is not None
    nothing.split([BR], frozenset({"br-us"}))
    assert not nothing.kept


def test_pin_problems():
    assert pin_problems(pin(providers=["azure"]), ["azure"], ["eu"]) == []
    assert pin_problems(pin(data_zones=["EU"]), ["azure"], ["eu"]) == []
    assert "pin to nowhere" in pin_problems(pin())[0]
    assert "unknown 'aws'" in pin_problems(pin(providers=["aws"]), ["azure"], [])[0]
    assert "unknown 'mars'" in pin_problems(pin(data_zones=["mars"]), [], ["eu"])[0]
    assert "unknown 'all'" in pin_problems(pin(providers=["azure"], work=["all"]))[0]
    assert all(not pin_problems(pin(providers=["a"], work=[w])) for w in WORK_KINDS)
    assert "more than 100" in pin_problems(pin(providers=[f"p{i}" for i in range(101)]))[0]
    assert "not after" in pin_problems(pin(providers=["a"], valid_until=NOW - 2 * HOUR))[0]
    naive = pin_problems(pin(providers=["a"], valid_from=dt.datetime(2026, 1, 1)))
    assert "timezone-aware" in naive[0]
