"""What one admin route is: the single declaration every other part of the admin API is derived from.

A resource module (`tenancy.py`, `keys.py`, …) lists its routes as `Route(...)` values: method, path
template, the RBAC action it needs, its handler, a summary, the request body and response types,
the status it answers with and the audit event a successful change writes. The dispatcher
(`dispatch.py`), the OpenAPI document (`openapi.py`) and the audit event table (`events.py`) read
these values, and the CLI (`multihome.cli.admin`) reads the OpenAPI document; nothing else names
an admin path.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ...config.oidc import IssuerConfig
from ...schema.principal import Principal
from ...tools.egress import EgressPolicy

PREFIX = "/admin/v1"
JSON_MEDIA, CSV_MEDIA = "application/json", "text/csv"


@dataclass(frozen=True, slots=True)
class AdminCall:
    """One admin request as a handler sees it: who asks, the path parameters, the decoded body, and
    the query (each parameter's last value)."""

    who: Principal
    params: dict[str, str]
    body: Any
    query: dict[str, str]

    @property
    def tenant(self) -> str:
        return self.params["tenant"]


@dataclass
class Services:
    """What the admin handlers work on; None where the gateway runs without it (no storage, no audit)."""

    store: Any = None  # storage.Store (or a stand-in until storage starts)
    gate: Any = None  # api.policy_gate.PolicyGate
    model_groups: frozenset[str] = frozenset()
    # The config's provider names (kept with model_groups on a reload); None: not known, nothing checked by them.
    providers: frozenset[str] | None = None
    metering: Any = None  # metering.service.Metering
    issuers: tuple[IssuerConfig, ...] = ()  # identity.oidc issuers (token revocations name one of them)
    contracts: Any = None  # contracts.service.ContractsService
    audit_reader: Any = None  # audit.AuditReader (GET /admin/v1/audit/events)
    audit_log: Any = None  # audit.AuditLog: every admin change is written here before it is answered
    crypto: Any = None  # crypto.service.CryptoServices: provider credentials and content capture (with storage)
    retention: Any = None  # config.responses.RetentionConfig: how long stored responses are kept
    background: Any = None  # api.responses.background.Background: background responses and agent runs
    memory: Any = None  # state.memory.MemoryStore: agent memory (with storage and a KMS)
    # The config's `egress:` rules, the agent runtime's instance: an MCP server's URL is judged by them when
    # registered (api/admin/mcp_servers.py) as every call to it is when dialled.
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    # Whether a tenant id exists (stored, or the static keys'), for resources kept without a foreign key.
    known_tenant: Callable[[str], Awaitable[bool]] | None = None
    # Who is refused because a stored row cannot be read (identity's Refusals: storage.service.StorageService);
    # api/admin/refusals.py narrows what a refused tenant's admins may call. None: no storage.
    refusals: Any = None
    static_keys_tenant: str | None = None  # identity.static_keys_tenant: in no tenant list (whoami says it)
    # POST /admin/v1/config/reload: read the config file again and apply it (live_config.py); None: not from a file.
    reload: Callable[[], Awaitable[Any]] | None = None
    console_session_ttl_s: float = 8 * 3600.0  # console.session_ttl_s: how long a session-end cut-off is kept
    # After every successful change: this replica applies it before answering (others within storage.refresh_s).
    after_change: Callable[[], Awaitable[None]] | None = None


Handler = Callable[[Services, AdminCall], Awaitable[Any]]
Check = Callable[[Principal, dict[str, str], dict[str, str]], None]


@dataclass(frozen=True, slots=True)
class Needs:
    """A dependency a route cannot work without: if `present(services)` is None, answer 501 `message`
    (code storage_not_configured: each one is a section of the config that is not set)."""

    present: Callable[[Services], object]
    message: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # a template: /admin/v1/tenants/{tenant}/keys/{id}
    role: str  # the RBAC action (api/admin/rbac.py): who may call it
    handler: Handler
    summary: str
    body: Any = None  # the request body type (msgspec), decoded before the handler runs
    response: Any = None  # the response body type, for the OpenAPI document (None: a JSON object)
    status: int = 200
    event: str | None = None  # "key.create": the admin_change a success writes to the audit trail
    # Fields of the answer the event's detail also holds (what a change was, where ids alone do not say it);
    # never a field that may hold a secret.
    detail: tuple[str, ...] = ()
    query: tuple[str, ...] = ()  # query parameters, for the OpenAPI document and the CLI
    media: str = JSON_MEDIA
    needs: Needs | None = None  # checked after the body is decoded
    check: Check | None = None  # replaces the RBAC check on the path's tenant (None: authorize(role, tenant))
    noun: str | None = None  # storage errors read "Invalid <noun>: …" (None: the store's message as is)
    choices: dict[str, str] | None = None  # body decode errors name the field, and these valid values
    # Top-level body fields holding a decimal: each is spelled as JSON writes a number (config/decimals.py), checked
    # before the typed decode reads a string with Decimal(), which takes "0_5" as 5 and " 5" or "+5" as 5 too.
    decimals: tuple[str, ...] = ()
    # A list of a tenant's own resources (its keys, teams, policies…): under a tenant id that is none (a typo, an
    # offboarded tenant) a 404, not an empty list.
    tenant_must_exist: bool = False
    # A tenant's history (usage, events, runs, stored state: evidence) outlives it: under a deleted tenant's id it
    # answers, under an id that never was a tenant's (Store.tenant_in_history) a 404. The path's tenant, or `?tenant=`.
    tenant_must_have_existed: bool = False
    refresh: bool = True  # a change runs Services.after_change before it is answered
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(
            r"\{(\w+)\}", r"(?P<\1>[A-Za-z0-9_\\-]+)", re.escape(self.path).replace(r"\{", "{").replace(r"\}", "}")
        )
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    @property
    def name(self) -> str:
        """The operation's name (the handler's): the OpenAPI operationId, by which the CLI calls a route."""
        return self.handler.__name__

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)


def listing(items: Any, unreadable: Iterable[Any] = ()) -> dict[str, Any]:
    """A list response: `{"object": "list", "data": [...]}`, and `"unreadable": [...]` when stored rows of
    the list cannot be read (storage/row_reads.py `Listed.unreadable`): left out of `data`, reported here."""
    out = {"object": "list", "data": items}
    bad = [unreadable_row(u) for u in unreadable]
    if bad:
        out["unreadable"] = bad
    return out


def listed(found: Any) -> dict[str, Any]:
    """A store's list (a `Listed`: the readable rows, `.unreadable` the others) as a list response."""
    return listing(found, getattr(found, "unreadable", ()))


def unreadable_row(u: Any, **done: bool) -> dict[str, Any]:
    """A stored row the gateway cannot read (storage.rows.Unreadable): which row and what is wrong with it
    (fields named, never a stored value: no key hash, no secret). `done`: revoked=True, deleted=True when a
    change was made to it (that is how it is mended)."""
    return {
        "object": "unreadable_row",
        "table": u.table,
        "id": u.id,
        "tenant_id": u.tenant_id,
        "problem": u.problem,
        **done,
    }


def deleted(object_id: str, kind: str) -> dict[str, Any]:
    return {"id": object_id, "object": f"{kind}.deleted", "deleted": True}


# The admin API's storage, needed by every route that reads or writes tenants, keys, policies, …
STORAGE = Needs(lambda s: s.store, "The admin API needs storage: set storage.url in the config.")
