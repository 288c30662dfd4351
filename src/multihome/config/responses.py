"""The `responses:` config section: how background responses run (the job worker every replica with
storage starts) and how long stored responses are kept (docs/responses.md "Background mode", "Retention").
"""

from __future__ import annotations

import msgspec

from .struct import Positive, PositiveCount, Strict


class BackgroundConfig(Strict):
    concurrency: PositiveCount = 8  # background responses one replica runs at once
    lease_s: Positive = 30.0  # a replica that stops renewing for this long loses its jobs to another
    poll_s: Positive = 0.5  # how often an idle replica looks for queued jobs (and a resumed stream for events)
    max_attempts: PositiveCount = 3  # runs of one response (a replica died, or the turn raised) before it fails
    # Background responses of one tenant queued or running at once, across replicas (None: no cap). The job
    # queue is shared and first-come: without it one tenant's thousands of queued runs delay every other's.
    max_open_per_tenant: PositiveCount | None = 100
    # Background responses of one tenant running at once, across replicas (None: no share): past it the tenant's
    # others wait queued and other tenants' run, so one tenant's queue of hour-long runs does not hold them back.
    max_running_per_tenant: PositiveCount | None = 4
    # Background responses' streams one tenant follows at once on one replica (None: no bound): each holds a
    # connection and reads the store every poll_s; a resume (GET ?stream=true) past it is a 429.
    max_streams_per_tenant: PositiveCount | None = 100
    event_flush_ms: PositiveCount = 100  # a streamed delta waits at most this long to be persisted and sent
    # The variable holding this replica's stable id (a StatefulSet pod's name, a host name): a replica
    # that restarts under the same id takes its dead incarnation's running jobs back at once, without
    # waiting for their leases. Ids must be unique among live replicas. Ignored with --workers > 1.
    replica_id_env: str | None = None


class RetentionConfig(Strict):
    ttl_s: Positive | None = 30 * 86400  # stored responses (and their stream events) older than this are deleted
    tenants: dict[str, Positive] = msgspec.field(default_factory=dict)  # tenant id -> its own TTL (seconds)
    sweep_interval_s: Positive = 300.0  # how often one replica sweeps


class AgentConfig(Strict):
    """Responses with `mcp` tools, whose loop model -> tools -> model the gateway runs (docs/agents.md)."""

    max_steps: PositiveCount = 10  # model calls in one response at most; then it ends `incomplete`
    max_tool_calls: PositiveCount = 50  # MCP calls in one response at most (a request's `max_tool_calls` may lower it)
    max_run_s: Positive = 3600.0  # a run's time budget, from its first step (a background run's too, across restarts)
    max_spend: Positive | None = None  # a run's spend cap, in the deployments' price currency (None: no cap)
    # Foreground runs (not `background`) one tenant has in progress at once on one replica (None: no bound):
    # each holds its connection and MCP sessions for up to max_run_s; past it a create is a 429.
    max_foreground_per_tenant: PositiveCount | None = 32


class TenantConversations(Strict):
    """A tenant's conversations at most: how many, and the plaintext bytes of their metadata and items (None:
    no limit)."""

    max_conversations: PositiveCount | None = 1_000_000
    max_bytes: PositiveCount | None = 10 << 30


class ConversationsConfig(Strict):
    """A conversation's bound (docs/responses.md "How state is kept"): every turn of it is rebuilt from all its
    items, so without one a tenant could make each turn cost more, and its storage grow, for ever. An add of
    items or a turn that would pass it is a 400 (`conversation_too_large`); a turn's own output is always kept."""

    max_items: PositiveCount = 10_000  # items in one conversation (10,000 messages of 100 tokens fill 1M tokens)
    max_bytes: PositiveCount = 64 << 20  # their plaintext bytes as stored (about three full 20 MiB request bodies)
    # What one tenant keeps in all its conversations (docs/responses.md "A tenant's conversations"): creating
    # a conversation and adding items cost no upstream call, so no budget holds them; this does.
    per_tenant: TenantConversations = msgspec.field(default_factory=TenantConversations)
    tenants: dict[str, TenantConversations] = msgspec.field(default_factory=dict)  # tenant id -> its own
    per_tenant_refresh_s: Positive = 30.0  # how old a replica's reading of a tenant's totals may be

    def tenant_limits(self, tenant: str) -> tuple[int | None, int | None]:
        limits = self.tenants.get(tenant, self.per_tenant)
        return limits.max_conversations, limits.max_bytes


class ResponsesConfig(Strict):
    background: BackgroundConfig = msgspec.field(default_factory=BackgroundConfig)
    agent: AgentConfig = msgspec.field(default_factory=AgentConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    conversations: ConversationsConfig = msgspec.field(default_factory=ConversationsConfig)
    # Calls of one tenant on the stored-state routes (/v1/conversations; reading, deleting and cancelling a
    # response, counting input tokens, not a create nor a stream) running at once on one replica (None: no bound); 32 times as many
    # more wait their turn, past that a 429: they hold the store's connections, which every tenant shares.
    max_concurrent_per_tenant: PositiveCount | None = 8
