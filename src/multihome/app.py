"""Composition root: validated config -> long-lived objects -> ASGI app."""

from __future__ import annotations

import os

from .api.anthropic_routes import AnthropicRoutes
from .api.drain import Drain
from .api.gateway import Gateway
from .api.openai_routes import OpenAIRoutes
from .config import Config, check_drain_timeout, env_secret, load_config
from .accounting.tracker import Accounting
from .api.admin_budget_routes import BudgetAdminRoutes
from .api.admin_contracts_routes import ContractRoutes
from .api.admin_revocation_routes import RevocationAdminRoutes
from .api.admin_metering_routes import MeteringAdminRoutes
from .api.admin_routes import AdminRoutes
from .api.policy_gate import PolicyGate
from .identity.authenticator import Authenticator
from .contracts.service import ContractsService
from .metering.service import Metering
from .observability.call_log import CallLog
from .routing.attempts import AttemptRunner
from .routing.breakers import Breakers
from .routing.health import HealthProber
from .routing.catalog import Catalog
from .routing.latency import LatencyStats
from .routing.planner import Planner
from .routing.router import Router
from .storage.service import StorageService

CONFIG_ENV = "MULTIHOME_CONFIG"
DRAIN_ENV = "MULTIHOME_DRAIN_TIMEOUT_S"  # `serve --drain-timeout`, passed on to `--workers` processes


def build_app(config: Config) -> Gateway:
    catalog = Catalog(config)
    storage = StorageService(config)
    oidc = _oidc(config)
    if oidc is not None and storage.enabled:  # token revocations (admin API) refuse tokens on every replica
        oidc.revocations = lambda: storage.snapshots.revocations if storage.snapshots is not None else None
        oidc.tenants, oidc.tenants_miss = storage.known_tenants, storage.refresh_after_miss  # offboarding works
    auth = Authenticator.from_config(
        config,
        managed=storage.lookup_key if storage.enabled else None,
        managed_miss=storage.refresh_after_miss if storage.enabled else None,
        oidc=oidc,
    )
    gate = PolicyGate(catalog, _Lazy(storage, "snapshots") if storage.enabled else None)
    breakers = _breakers(config)
    latency = LatencyStats(config.routing.latency_ewma_alpha)
    contracts = ContractsService(config.contracts, url=storage.url)
    planner = Planner(breakers, latency, commitments=contracts)
    router = Router(catalog, planner, AttemptRunner(breakers, latency))
    metering = Metering.from_config(config)
    if storage.enabled:
        metering.snapshots = _Lazy(storage, "snapshots")  # budgets set through the admin API
    # Metering has work only with somewhere to write usage or limits to enforce.
    metered = storage.enabled or bool(config.metering.budgets or config.metering.rate_limits)
    accounting = Accounting(sinks=[metering], limiter=metering.limiter) if metered else Accounting()
    extra_services = [metering] if metered else []
    if storage.enabled:
        # Metered cost accrues to revenue shares and commitments, from the config or created
        # through the admin API (so the ledger runs whenever there is storage to keep it).
        metering.add_sink(contracts)
        extra_services.append(contracts)
    if config.server.call_log:
        call_log = CallLog(config.server.call_log)
        accounting.sinks.append(call_log)
        extra_services.append(call_log)
    telemetry = None
    if config.telemetry is not None:
        from .observability.telemetry import Telemetry  # the OpenTelemetry SDK runs in its worker process
        from .providers.registry import BY_NAME

        telemetry = Telemetry.from_config(config, BY_NAME)
        accounting.sinks.append(telemetry)
        accounting.trace_context = True  # spans join the client's trace (traceparent)
    audit_log = None
    if config.audit.enabled:
        from .audit import AuditLog

        audit_log = AuditLog(config.audit, heads_url=storage.url)  # the head registry lives beside the rest
        accounting.audit = audit_log  # call_started is on disk before the answer's first byte
        accounting.sinks.append(audit_log)  # then the completed call
    routes = OpenAIRoutes(catalog, router, config.server.max_body_bytes, gate, accounting)
    anthropic = AnthropicRoutes(routes, auth)
    async def after_change() -> None:
        await storage.refresh()
        await gate.refresh()
        await metering.refresh_budgets()

    store = _Lazy(storage, "store") if storage.enabled else None
    admin = AdminRoutes(store, gate, frozenset(catalog.groups), after_change)
    admin = MeteringAdminRoutes(metering, fallback=admin)
    admin = BudgetAdminRoutes(metering, store, after_change, fallback=admin)
    admin = RevocationAdminRoutes(store, config.identity.oidc, after_change, fallback=admin)
    admin = _Prefixed(ContractRoutes(contracts), admin)
    if audit_log is not None:
        from .api.admin_audit_routes import AuditedAdmin, AuditRoutes
        from .audit import AuditReader

        admin = AuditedAdmin(admin, AuditRoutes(AuditReader(config.audit.dir)), audit_log)
    probe = config.routing.health_probe
    prober = HealthProber(list(catalog.deployments.values()), breakers, probe.interval_s, probe.timeout_s)
    services = [storage, gate, catalog, _Started(breakers, list(catalog.deployments)), prober, *extra_services]
    if telemetry is not None:
        services.insert(0, telemetry)  # up before calls are served, flushed after the rest closed
    if audit_log is not None:
        services.insert(0, audit_log)  # first up, last down: it records everything the others do
    if oidc is not None:
        services.append(oidc)
    drain = Drain(config.server.drain_timeout_s)
    return Gateway(
        catalog,
        auth,
        routes,
        {b"/v1/messages": anthropic.messages, b"/v1/messages/count_tokens": anthropic.count_tokens},
        services=services,
        admin=admin,
        drain=drain,
    )


def served_app(config: Config) -> Gateway:
    """The app as uvicorn serves it: its stop signals start the gateway's drain (api/drain.py)."""
    gateway = build_app(config)
    gateway.drain.on_signals = True
    return gateway


def _oidc(config: Config):
    if not config.identity.oidc:
        return None
    from .identity.oidc import OidcVerifier

    return OidcVerifier(list(config.identity.oidc))


class _Prefixed:
    """Admin routes a module serves itself (`routes.handles(path)`), in front of the rest."""

    def __init__(self, routes, fallback) -> None:
        self._routes, self._fallback = routes, fallback

    async def handle(self, scope, receive, send, request_id: bytes, principal) -> None:
        target = self._routes if self._routes.handles(scope["path"]) else self._fallback
        await target.handle(scope, receive, send, request_id, principal)


class _Lazy:
    """Stands in for an object a service creates at start-up (the store, its snapshot cache)."""

    def __init__(self, owner, attr: str) -> None:
        self._owner, self._attr = owner, attr

    def __getattr__(self, name: str):
        return getattr(getattr(self._owner, self._attr), name)


def _breakers(config: Config) -> Breakers:
    url = env_secret(config.routing.redis_url_env, what="routing.redis_url_env")
    if url is None:
        return Breakers(config.routing.breaker)
    from .routing.breakers_redis import SharedBreakers

    return SharedBreakers(config.routing.breaker, url)


class _Started:
    """Adapts a service whose start() needs arguments to the gateway's start()/close() lifecycle."""

    def __init__(self, service, *args) -> None:
        self._service, self._args = service, args

    async def start(self) -> None:
        await self._service.start(*self._args)

    async def close(self) -> None:
        await self._service.close()


def app_from_env() -> Gateway:
    """Factory for `uvicorn --factory` workers: each worker process builds its own app."""
    config = load_config(os.environ[CONFIG_ENV])
    if DRAIN_ENV in os.environ:
        config.server.drain_timeout_s = check_drain_timeout(float(os.environ[DRAIN_ENV]), DRAIN_ENV)
    return served_app(config)
