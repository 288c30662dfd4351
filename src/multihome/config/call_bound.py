"""How long one call can last at most under the routing config.

A call's usage reservation is released by a sweeper when nobody settled it within
`metering.ticket_ttl_s` (the front door lost the call). A call that is merely long - a slow stream,
retries after timeouts, failover to other deployments and fallback groups - must never be taken for
a lost one: its settlement would then be dropped and the live counters would miss its cost. So the
sweeper waits at least this long.
"""

from __future__ import annotations

from .model import Config, ModelGroup


def longest_call_s(config: Config) -> float:
    """The longest any model group's call can take: every attempt and backoff of the group and of
    its fallback groups (tried after it, one level: routing/router.py)."""
    groups = config.model_groups
    return max(
        (
            _own(group) + sum(_own(groups[name]) for name in group.fallback_groups if name in groups)
            for group in groups.values()
        ),
        default=0.0,
    )


def _own(group: ModelGroup) -> float:
    t = group.timeouts
    if t.budget_s is not None:
        return t.budget_s  # the whole walk over this group's deployments is cut at its budget
    attempt = t.connect_s + t.first_byte_s + t.total_s
    # A retry waits the exponential backoff, or a Retry-After up to max_retry_after_s (routing/attempts.py).
    backoff = sum(max(group.backoff_ms * 2**retry / 1000, group.max_retry_after_s) for retry in range(group.retries))
    return len(group.deployments) * ((group.retries + 1) * attempt + backoff)
