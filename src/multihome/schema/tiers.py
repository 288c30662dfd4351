"""OpenAI's `service_tier` values, shared by the chat and Responses front doors, the config's tier
prices and the planner: a tier other than `auto` or `default` is served only where it has a price
(docs/metering.md, "Service tiers")."""

from __future__ import annotations

SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")  # OpenAI's ServiceTier
# Priced as the deployment's own price: `default` is that tier, and `auto` is the upstream project's
# default tier (the gateway cannot know otherwise before the answer).
DEFAULT_TIERS = frozenset({"auto", "default"})
PRICED_TIERS = tuple(t for t in SERVICE_TIERS if t not in DEFAULT_TIERS)  # each needs a price of its own
# The tiers that ask for more than the default, which OpenAI serves at the default tier when it cannot
# give them (the answer's `service_tier` then says `default`): a deployment whose upstream takes no
# service_tier (a translated one: Claude, Gemini, Bedrock Converse) serves them so, at its own price.
# Not `flex`: a cheaper tier served at the default would cost more than asked (OpenAI refuses it instead).
SERVED_AT_DEFAULT = frozenset({"priority", "scale", "fast", "ultrafast"})


def need(tier: str) -> str:
    """The capability a deployment has when it can serve (and price) `tier` (routing's planner)."""
    return "service_tier:" + tier
