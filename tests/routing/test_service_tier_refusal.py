"""A call asking for a service tier is refused with a 400 `unsupported_service_tier` only when no
deployment of the model prices the tier. When one does and is down (its breaker open), the call is the
outage's retryable 503, as without a tier: a 400 would tell the client (and its SDK, which does not retry
a 400) that the tier is not offered at all."""

from __future__ import annotations

from types import SimpleNamespace

from multihome.routing.planner import SKIPPED, Considered, Plan
from multihome.routing.router import _unsupported
from multihome.schema import tiers
from multihome.schema.chat import ChatRequest, Message

PRIORITY = tiers.need("priority")


def _refusal(priced_reason: str, tier_priced: bool = True):
    group = SimpleNamespace(
        name="g",
        deployments=[
            SimpleNamespace(name="priced", capabilities=frozenset({"chat", *([PRIORITY] if tier_priced else [])})),
            SimpleNamespace(name="plain", capabilities=frozenset({"chat"})),
        ],
    )
    plan = Plan(
        "g",
        "ordered",
        [],
        [Considered("priced", SKIPPED, priced_reason), Considered("plain", SKIPPED, f"lacks {PRIORITY}")],
        frozenset({"chat", PRIORITY}),
    )
    chat = ChatRequest(model="g", messages=[Message(role="user", content="hi")], service_tier="priority")
    return _unsupported(group, plan, SimpleNamespace(chat=chat))


def test_the_only_deployment_pricing_the_tier_down_is_a_503_not_an_unsupported_tier():
    err = _refusal("breaker open for 5.0s more")
    assert (err.status, err.body.code) == (503, "all_deployments_unavailable")


def test_no_deployment_pricing_the_tier_is_the_400_naming_it():
    group_wide = _refusal(f"lacks {PRIORITY}", tier_priced=False)
    assert (group_wide.status, group_wide.body.code, group_wide.body.param) == (
        400,
        "unsupported_service_tier",
        "service_tier",
    )
