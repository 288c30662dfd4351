"""Table definitions: the single source of truth the migrations must match (a test checks it).

Ids are readable prefixed strings (`ten_...`, `team_...`, `key_...`, `pol_...`, `ent_...`, `bud_...`, `rev_...`,
`evt_...`): random, or, for the rows of a list read oldest first, their `created_at` then random (ids.py `timed_id`). Timestamps are UTC. JSON columns hold plain JSON (dicts/lists of str, numbers, bools).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = sa.String(40)
TS = sa.DateTime(timezone=True)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.UniqueConstraint("tenant_id", "name"),
    sa.UniqueConstraint("tenant_id", "id"),  # target of api_keys' (tenant_id, team_id) foreign key
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("team_id", ID, nullable=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("roles", sa.JSON, nullable=False),
    sa.Column("scopes_models", sa.JSON, nullable=True),
    sa.Column("scopes_endpoints", sa.JSON, nullable=True),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("expires_at", TS, nullable=True),
    sa.Column("revoked_at", TS, nullable=True),
    sa.Column("created_at", TS, nullable=False),
    # A key's team belongs to the key's tenant: enforced by the database, not only by code.
    sa.ForeignKeyConstraint(["tenant_id", "team_id"], ["teams.tenant_id", "teams.id"]),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("scope_id", ID, nullable=False),
    sa.Column("rules", sa.JSON, nullable=False),
    sa.Column("description", sa.String(1000), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    # The role of whoever set or last changed it: a tenant-admin neither changes nor deletes an org-admin's
    # policy (docs/policy.md "Who may change a policy"). Read by the admin API only, never per call.
    sa.Column("set_by_role", sa.String(16), nullable=False, server_default="org-admin"),
    sa.CheckConstraint("scope IN ('tenant', 'team', 'key')", name="scope"),
    sa.CheckConstraint("set_by_role IN ('org-admin', 'tenant-admin')", name="set_by_role"),
)

entitlements = sa.Table(
    "entitlements",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("model_group", sa.String(200), nullable=False, index=True),
    sa.Column("starts_on", sa.Date, nullable=False),
    sa.Column("ends_on", sa.Date, nullable=False),
    sa.Column("exclusive", sa.Boolean(create_constraint=False), nullable=False),
    sa.Column("note", sa.String(1000), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("revoked_at", TS, nullable=True),
    sa.CheckConstraint("ends_on >= starts_on", name="dates"),
)

# Where a tenant's stateful work may be hosted (multihome.policy.pins), time-bound like an entitlement.
stateful_pins = sa.Table(
    "stateful_pins",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("providers", sa.JSON, nullable=True),
    sa.Column("data_zones", sa.JSON, nullable=True),
    sa.Column("work", sa.JSON, nullable=True),
    sa.Column("valid_from", TS, nullable=False),
    sa.Column("valid_until", TS, nullable=True),
    sa.Column("note", sa.String(1000), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("revoked_at", TS, nullable=True),
    sa.CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="validity"),
)

# Budgets set through the admin API (config budgets live in the config file). One row per
# counter: (scope, scope_id, period, currency) is what metering counts spend against.
budgets = sa.Table(
    "budgets",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("scope_id", ID, nullable=False),
    sa.Column("amount", sa.String(64), nullable=False),  # exact decimal as text ("12.5")
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("period", sa.String(8), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    # The role of whoever set or last changed it (docs/metering.md "Who may change a budget").
    sa.Column("set_by_role", sa.String(16), nullable=False, server_default="org-admin"),
    sa.UniqueConstraint("scope", "scope_id", "period", "currency"),
    sa.CheckConstraint("scope IN ('tenant', 'team', 'key')", name="scope"),
    sa.CheckConstraint("period IN ('day', 'month', 'total')", name="period"),
    sa.CheckConstraint("mode IN ('hard', 'soft')", name="mode"),
    sa.CheckConstraint("set_by_role IN ('org-admin', 'tenant-admin')", name="set_by_role"),
)

# Revoked OIDC tokens (docs/oidc.md "Revocation"). kind "jti": one token, by its issuer and `jti`
# claim. kind "subject": every token of an issuer's subject whose `iat` is at or before
# `not_before`. A row with a tenant applies only to tokens that map to that tenant; without one,
# to every tenant. After `expires_at` the row is ignored (the hot path checks it too).
token_revocations = sa.Table(
    "token_revocations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True, index=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("issuer", sa.String(1000), nullable=False),  # the exact `iss`
    sa.Column("subject", sa.String(400), nullable=True),
    sa.Column("jti", sa.String(400), nullable=True),
    sa.Column("not_before", TS, nullable=True),
    sa.Column("expires_at", TS, nullable=True, index=True),
    sa.Column("reason", sa.String(1000), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    # The role of whoever set it: one a tenant-admin set never refuses an org-admin's or auditor's token, and
    # a tenant-admin never lifts one an org-admin set (docs/oidc.md "Revocation").
    sa.Column("set_by_role", sa.String(16), nullable=False, server_default="org-admin"),
    sa.CheckConstraint("kind IN ('jti', 'subject')", name="kind"),
    sa.CheckConstraint("set_by_role IN ('org-admin', 'tenant-admin')", name="set_by_role"),
    sa.CheckConstraint(
        "(kind = 'jti' AND jti IS NOT NULL AND subject IS NULL AND not_before IS NULL) OR "
        "(kind = 'subject' AND subject IS NOT NULL AND jti IS NULL AND not_before IS NOT NULL)",
        name="fields",
    ),
)

# Console sessions ended before their own expiry (docs/console.md "Ending sessions"): one session by the
# random id its sealed cookie carries (a logout), or every session of a subject, or of every subject, issued
# at or before `not_before` (an org-admin's). Each replica holds the live rows in its snapshot; a row is
# pruned once `expires_at` has passed (by then every session it ends has expired by itself).
console_session_ends = sa.Table(
    "console_session_ends",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=True, unique=True),
    sa.Column("tenant_id", ID, nullable=True),  # no foreign key: the bootstrap key's tenant is "*"
    sa.Column("subject", sa.String(400), nullable=True),
    sa.Column("not_before", TS, nullable=True),
    sa.Column("expires_at", TS, nullable=False, index=True),
    sa.Column("reason", sa.String(1000), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    # Whose subject: an identity.oidc issuer's exact `iss`, `api_key` (the subject is the key's id) or `static`;
    # NULL in a row from before 0028: that subject of any issuer, as it meant then.
    sa.Column("issuer", sa.String(400), nullable=True),
    # Who set a cut-off: one a tenant-admin set never ends an org-admin's or an auditor's session. NULL: a logout.
    sa.Column("set_by_role", sa.String(16), nullable=True),
    sa.CheckConstraint("kind IN ('session', 'subject', 'all')", name="kind"),
    sa.CheckConstraint(
        "(kind = 'session' AND set_by_role IS NULL) OR "
        "(kind <> 'session' AND set_by_role IN ('org-admin', 'tenant-admin'))",
        name="set_by_role",
    ),
    sa.CheckConstraint(
        "(kind = 'session' AND session_id IS NOT NULL AND not_before IS NULL) OR "
        "(kind = 'subject' AND subject IS NOT NULL AND session_id IS NULL AND not_before IS NOT NULL) OR "
        "(kind = 'all' AND subject IS NULL AND session_id IS NULL AND not_before IS NOT NULL)",
        name="fields",
    ),
)

# The audit head registry (docs/audit.md "Rollback"): the newest checkpoint of every audit chain,
# kept apart from the audit files so that cutting the files back shows. `seq` never goes down.
audit_heads = sa.Table(
    "audit_heads",
    metadata,
    sa.Column("chain", sa.String(200), primary_key=True),
    sa.Column("trail", sa.String(400), nullable=False, index=True),  # audit.trail: which directory
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("head", sa.String(64), nullable=False),
    sa.Column("final", sa.Boolean(create_constraint=False), nullable=False),
    sa.Column("checkpoint", sa.Text, nullable=False),  # the checkpoint as signed (canonical JSON)
    sa.Column("updated_at", TS, nullable=False),
)

# Wrapped data keys of envelope encryption (docs/encryption.md): one row per data key of a
# (tenant, purpose). `wrapped` is the data key encrypted by the key-encryption key `kek_id` at
# `kek_version` in the KMS `backend`; the plaintext key never reaches the database. `messages`
# counts seals reserved under the key (in blocks, so never below the true count); at the limit
# the key is retired and a new one made. No FK to tenants: static-key tenants have no row.
data_keys = sa.Table(
    "data_keys",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("purpose", sa.String(16), nullable=False),
    sa.Column("backend", sa.String(16), nullable=False),
    sa.Column("kek_id", sa.String(1000), nullable=False),
    sa.Column("kek_version", sa.String(200), nullable=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("messages", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("retired_at", TS, nullable=True),
    sa.Column("rewrapped_at", TS, nullable=True),
    sa.Index(None, "tenant_id", "purpose", "state"),
    sa.CheckConstraint("state IN ('active', 'retired')", name="state"),
    sa.CheckConstraint("messages >= 0", name="messages"),
)

# A provider's credential (its API key) set through the admin API, sealed under purpose `credentials`
# of the organisation (crypto/credentials.py). Never in clear: `fingerprint` is at most its last 4 characters.
provider_credentials = sa.Table(
    "provider_credentials",
    metadata,
    sa.Column("provider", sa.String(200), primary_key=True),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Column("fingerprint", sa.String(4), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

# Prompts and answers of a tenant with content capture on (crypto/capture.py), sealed under purpose
# `capture` of that tenant: a shred of the tenant makes them unreadable. The rest is metadata in clear.
captures = sa.Table(
    "captures",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("at", TS, nullable=False),
    sa.Column("endpoint", sa.String(40), nullable=False),
    sa.Column("model_group", sa.String(200), nullable=False),
    sa.Column("deployment", sa.String(200), nullable=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Index(None, "tenant_id", "at"),
)

# The stateful runtime (multihome/state/, docs/responses.md). What a tenant wrote or a model answered is
# only ever in `body`, sealed under the tenant's `responses` data key (crypto/); the clear columns hold
# ids, the tenant, times, status and sizes. No foreign key to tenants: static-key tenants are not stored.
responses = sa.Table(
    "responses",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("previous_response_id", ID, nullable=True),  # the chain a continuation rebuilds
    sa.Column("conversation_id", ID, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),  # plaintext bytes
    sa.Column("body", sa.LargeBinary, nullable=False),  # sealed: the Response object and its input items
    sa.Index(None, "tenant_id", "created_at"),
)

# How many `responses` rows were ever deleted (one row; a trigger of the migration adds one per row deleted,
# whatever deletes it): a replica that holds chains opened in memory reads this one row instead of asking
# for every turn of a chain again while it has not moved (state/store.py, state/cache.py).
response_deletions = sa.Table(
    "response_deletions",
    metadata,
    sa.Column("n", sa.BigInteger, nullable=False),
)

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("next_position", sa.BigInteger, nullable=False),  # where the next item goes
    # its items now: how many, and their plaintext bytes (the conversation's bound, state/store.py)
    sa.Column("item_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("item_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # sealed: the metadata
    sa.Index(None, "tenant_id", "created_at"),
)

conversation_items = sa.Table(
    "conversation_items",
    metadata,
    sa.Column("conversation_id", ID, sa.ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", sa.String(200), nullable=False),  # ours (`msg_…`) or a client's (replayed from elsewhere)
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # sealed: the item
    sa.UniqueConstraint("conversation_id", "id"),
)

# The stream events of a background response created with `stream: true` (docs/responses.md
# "Background mode"), so a client can resume with `starting_after`: one row per event, its
# `sequence_number` the key. Sealed like the response; deleted with it (and by retention).
response_events = sa.Table(
    "response_events",
    metadata,
    sa.Column("response_id", ID, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # sealed: the event's SSE bytes
)

# The durable job queue of the stateful runtime (state/jobs.py, docs/responses.md "Background
# mode"): one row per unit of background work (a background response, an agent run). A replica
# claims a job by taking its lease; `attempt` fences a replica whose lease was taken over. No
# content here: `ref_id` names the sealed record the job works on.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("ref_id", ID, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.String(200), nullable=True),
    sa.Column("lease_until", TS, nullable=True),
    sa.Column("available_at", TS, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("error", sa.String(1000), nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("kind", "ref_id"),
    sa.Index(None, "status", "available_at"),
    sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="status"),
    sa.CheckConstraint("attempt >= 0 AND max_attempts >= 1", name="attempts"),
)

# Idempotency-Key of a stateful create (state/idempotency.py, docs/responses.md "Idempotency-Key"): per
# tenant, the request it was first used with (a digest), and what it made once done; shared by replicas.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),  # sha256 of the request body
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("status", sa.Integer, nullable=True),  # the original answer's HTTP status, once done
    sa.Column("object_id", sa.String(200), nullable=True),  # what it created (a response id), once done
    # A `store: false` unary response's answer, sealed (purpose `responses`, bound to the key): what a retry
    # is answered with, since no stored row holds it (state/idempotency.py `keep`).
    sa.Column("answer", sa.LargeBinary, nullable=True),
    sa.Column("locked_until", TS, nullable=False),  # pending: a replica that died mid-call lets go then
    sa.Column("expires_at", TS, nullable=False),
    sa.CheckConstraint("state IN ('pending', 'done')", name="state"),
    sa.Index(None, "expires_at"),
)

# MCP servers an admin registered for a tenant (tools/servers.py, docs/agents.md "MCP servers"): the only
# ones its requests may reach. Header values (credentials) only ever in `headers`, sealed under the
# tenant's `credentials` data key bound to the row's id; `header_names` lists their names in clear.
mcp_servers = sa.Table(
    "mcp_servers",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("description", sa.String(1000), nullable=False),
    sa.Column("allowed_tools", sa.JSON, nullable=True),  # a list of tool names; null: every tool
    sa.Column("require_approval", sa.JSON, nullable=False),  # "always", "never" or OpenAI's filter object
    sa.Column("header_names", sa.JSON, nullable=False),
    sa.Column("headers", sa.LargeBinary, nullable=True),  # sealed JSON object; null: no headers
    sa.Column("created_at", TS, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.UniqueConstraint("tenant_id", "name"),
)

# Long-term agent memory (state/memory/, docs/memory.md): a namespace is one (tenant, agent, user);
# its records are sealed under the tenant's `memory` data key, text, metadata and embedding alike, so
# no row holds anything a reader could search or recover text from. `version` changes with every
# write or delete in the namespace and `next_seq` numbers them, so a replica's in-memory index
# catches up by reading only what changed (records and tombstones with a higher `seq`).
memory_namespaces = sa.Table(
    "memory_namespaces",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("agent_id", sa.String(200), nullable=False),  # "" when the namespace is a user's across agents
    sa.Column("user_id", sa.String(200), nullable=False),  # "" when the namespace is an agent's own
    sa.Column("default_ttl_s", sa.BigInteger, nullable=True),  # records written without a TTL get this one
    sa.Column("next_seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    # The embedding model (and dimension) every vector of the namespace comes from, set by its first write
    # (NULL until then): queries and later writes are embedded by the same model (state/memory/store.py).
    sa.Column("embedding_model", sa.String(300), nullable=True),
    sa.Column("embedding_dim", sa.Integer, nullable=True),
    # The model (and dimension) a re-embedding under way moves the namespace to (state/memory/reembed.py):
    # NULL when none is; the namespace's searches use `embedding_model` until the switch.
    sa.Column("reembed_model", sa.String(300), nullable=True),
    sa.Column("reembed_dim", sa.Integer, nullable=True),
    sa.UniqueConstraint("tenant_id", "agent_id", "user_id"),
    sa.Index(None, "tenant_id", "user_id"),
)

memory_records = sa.Table(
    "memory_records",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("namespace_id", ID, sa.ForeignKey("memory_namespaces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=True),
    sa.Column("size", sa.Integer, nullable=False),  # plaintext bytes
    sa.Column("body", sa.LargeBinary, nullable=False),  # sealed: text, metadata, embedding
    # Sealed like `body`, with the vector of the namespace's `reembed_model`: becomes `body` at the switch.
    sa.Column("next_body", sa.LargeBinary, nullable=True),
    sa.UniqueConstraint("namespace_id", "seq"),
    sa.Index(None, "expires_at"),
)

# A deleted record's id, so replicas drop it from their in-memory index (no content: the id only).
memory_tombstones = sa.Table(
    "memory_tombstones",
    metadata,
    sa.Column("namespace_id", ID, sa.ForeignKey("memory_namespaces.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("record_id", ID, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

# Which snapshot row (table, id) changed at which version (storage/snapshot_load.py): written by a trigger on each
# table the snapshot holds, with `seq` NULL, and stamped by the writing transaction with the version it bumped
# (storage/base.py `_write`), under the counter's row lock: in commit order, like admin_events' `seq`. A
# replica reads the rows changed since the version it holds; rows older than CHANGES_KEPT versions are pruned.
snapshot_changes = sa.Table(
    "snapshot_changes",
    metadata,
    sa.Column("seq", sa.BigInteger, nullable=True, index=True),
    sa.Column("tbl", sa.String(40), nullable=False),
    sa.Column("row_id", sa.String(40), nullable=False),
)

# `seq` is the state_version the change produced: a gap-free total order in commit order.
admin_events = sa.Table(
    "admin_events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("id", ID, nullable=False, unique=True),
    sa.Column("at", TS, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("tenant_id", ID, nullable=True, index=True),  # no FK: the record outlives the tenant
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("object_type", sa.String(32), nullable=False),
    sa.Column("object_id", ID, nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
)

state_version = sa.Table(
    "state_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    # The lowest version whose snapshot_changes are all still held: a replica that saw an older one reloads all.
    sa.Column("changes_from", sa.BigInteger, nullable=False, server_default="0"),
    sa.CheckConstraint("id = 1", name="one_row"),
)
