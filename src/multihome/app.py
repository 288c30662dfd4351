"""Composition root: validated config -> long-lived objects -> ASGI app."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from .accounting.tracker import Accounting
from .api.admin.dispatch import AdminApi
from .api.admin.route import Services
from .api.anthropic.routes import AnthropicDoor
from .api.drain import Drain
from .api.gateway import Gateway, Service
from .api.memory import handlers as memory_handlers
from .api.metrics_endpoint import MetricsEndpoint
from .api.openai.chat import ChatDoor
from .api.openai.embeddings import EmbeddingsDoor
from .api.openai.explain import ExplainDoor
from .api.openai.models import ModelsDoor
from .api.pipeline import Pipeline
from .api.policy_gate import PolicyGate
from .api.responses.agent import AgentSetup
from .api.responses.handlers import handlers as responses_handlers
from .api.tenant_gate import TenantGate
from .config import Config, check_drain_timeout, env_secret
from .contracts.service import ContractsService
from .identity.authenticator import Authenticator
from .identity.stored_caller import stored_caller
from .live_config import LiveConfig, Reloadable, read_config
from .metering.service import Metering
from .observability.call_log import CallLog
from .routing.attempts import AttemptRunner
from .routing.breakers import Breakers
from .routing.catalog import Catalog
from .routing.health import HealthProber
from .routing.latency import LatencyStats
from .routing.planner import Planner
from .routing.router import Router
from .storage.service import StorageService
from .tools.egress import EgressPolicy

CONFIG_ENV = "MULTIHOME_CONFIG"
DRAIN_ENV = "MULTIHOME_DRAIN_TIMEOUT_S"  # `serve --drain-timeout`, passed on to `--workers` processes
LISTEN_ENV = "MULTIHOME_LISTEN_URL"  # where `serve` listens, for each worker's start-up line
SUPERVISED_ENV = "MULTIHOME_SUPERVISED"  # set by `serve --workers`: its parent passes SIGHUP to every worker


def build_app(config: Config, config_path: str | None = None) -> Gateway:
    """`config_path`: the file `config` was read from, read again by a reload (None: no reload)."""
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
        refusals=storage if storage.enabled else None,
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
    extra_services: list[Service] = [metering] if metered else []
    if storage.enabled:
        # Metered cost accrues to revenue shares and commitments, from the config or created
        # through the admin API (so the ledger runs whenever there is storage to keep it). The usage
        # spool covers its queue too: up before metering (whose start-up replay feeds it), down after.
        metering.hold_spool(contracts)
        extra_services.insert(0, contracts)
    call_log = None
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
    crypto = None
    if storage.enabled:  # the keyring opens at start-up (no KMS call until something is sealed)
        from .crypto.service import CryptoServices

        crypto = CryptoServices(config, storage, audit_log, catalog.stored_key_providers(), catalog.set_api_key)
        accounting.capture = crypto.capture  # None unless capture.tenants names a tenant
    metrics = None
    if config.metrics.enabled:
        metrics = _metrics(config, catalog, breakers, metering, accounting, audit_log, call_log, crypto, telemetry)
        if storage.enabled:
            metrics.sources = replace(metrics.sources, known_tenants=storage.known_tenants)
    pipeline = Pipeline(catalog, router, config.server.max_body_bytes, gate, accounting)
    state = None
    if crypto is not None:  # stored responses and conversations, sealed under the tenant's keys (docs/responses.md)
        from .state.service import StateService

        state = StateService(storage, _Lazy(crypto, "keyring"), config.responses.conversations)
    memory = None
    if crypto is not None:  # long-term agent memory, sealed under the tenant's keys (docs/memory.md)
        from .state.memory.service import MemoryService

        routed = None
        if config.memory.embeddings.model is not None:  # embedded through the gateway's own routing
            from .api.memory_embeddings import RoutedEmbeddings

            routed = RoutedEmbeddings(pipeline, config.memory.embeddings)
        memory = MemoryService(
            storage,
            _Lazy(crypto, "keyring"),
            routed=routed,
            prefix=config.memory.embeddings.matryoshka,
            limits=config.memory,
        )
    # Agent runs (responses with mcp or memory tools): their limits, what their steps cost, where MCP servers
    # may be, the memory store. metering.prices through _Lazy: a run after a config reload pays the new prices.
    egress = EgressPolicy.from_config(config.egress)  # MCP calls are dialled, and registrations judged, by it
    agent = AgentSetup(
        config.responses.agent,
        cast(Any, _Lazy(metering, "prices")),
        egress,
        cast(Any, _Lazy(memory, "store")) if memory is not None else None,
        auth.authenticate,
    )
    background = None
    if state is not None:  # background responses: a job worker on every replica with storage
        from .api.responses.background import Background

        flush = metering.flush if metered else None  # a run's usage is durable before its checkpoint
        background = Background(
            pipeline,
            cast(Any, _Lazy(state, "store")),
            config.responses,
            flush_usage=flush,
            billed=metering.stored_row if metered else None,
            mark=metering.mark_recorded if metered else None,
            agent=agent,
            # A run acts as its stored principal: is its tenant still there, and still served?
            admitted=stored_caller(
                _known_tenant(storage, config.identity.static_keys_tenant),
                storage,
                _usable_key(storage),
                oidc.check_stored if oidc is not None else None,
            ),
            token_facts=auth.token_facts,
        )
    models, anthropic = ModelsDoor(pipeline), AnthropicDoor(pipeline)
    explain = ExplainDoor(pipeline)
    known_tenant = _known_tenant(storage, config.identity.static_keys_tenant)
    doors = {  # the handler names of the route table (api/routes.py)
        "chat": ChatDoor(pipeline).handle,
        "embeddings": EmbeddingsDoor(pipeline).handle,
        "explain": explain.handle,
        "models": models.list,
        "model": models.get,
        "messages": anthropic.messages,
        "count_tokens": anthropic.count_tokens,
        **responses_handlers(
            pipeline,
            cast(Any, _Lazy(state, "store")) if state is not None else None,
            background,
            agent,
            TenantGate(config.responses.max_concurrent_per_tenant, "responses.max_concurrent_per_tenant"),
        ),
        **memory_handlers(
            pipeline,
            cast(Any, _Lazy(memory, "store")) if memory is not None else None,
            audit_log,
            known_tenant,
            TenantGate(config.memory.max_concurrent_per_tenant, "memory.max_concurrent_per_tenant"),
        ),
    }
    if metrics is not None:
        doors["metrics"] = MetricsEndpoint(metrics, auth, config.metrics.access).handle

    async def after_change() -> None:
        await storage.refresh()
        await gate.refresh()
        await metering.refresh_budgets()

    store = _Lazy(storage, "store") if storage.enabled else None
    live = LiveConfig(config, config_path)
    audit_reader = None
    if audit_log is not None:
        from .audit import AuditReader

        audit_reader = AuditReader(audit_log.dir)
    admin = AdminApi(
        Services(
            store=store,
            gate=gate,
            model_groups=frozenset(catalog.groups),
            providers=frozenset(config.providers),
            metering=metering,
            issuers=tuple(config.identity.oidc),
            contracts=contracts,
            audit_reader=audit_reader,
            audit_log=audit_log,
            after_change=after_change,
            console_session_ttl_s=config.console.session_ttl_s,
            crypto=crypto,
            retention=config.responses.retention,
            background=background,
            memory=_Lazy(memory, "store") if memory is not None else None,
            egress=egress,
            known_tenant=known_tenant,
            static_keys_tenant=config.identity.static_keys_tenant,
            refusals=storage if storage.enabled else None,
            reload=live.reload_everywhere if config_path is not None else None,
        ),
        bodies=pipeline.bodies,
    )
    if config.console.enabled:
        from .api.console.site import Console
        from .api.console.views import Parts

        parts = Parts(admin, catalog, breakers, explain)
        from .api.console.ends import SessionEnds

        ends = SessionEnds(
            storage if storage.enabled else None, {i.name: i.issuer for i in config.identity.oidc}, audit_log
        )
        doors["console"] = Console(parts, auth, config.console, config.identity.oidc, ends).handle
    probe = config.routing.health_probe
    prober = HealthProber(list(catalog.deployments.values()), breakers, probe.interval_s, probe.timeout_s)
    started = _Started(breakers, list(catalog.deployments))
    live.parts = Reloadable(catalog, gate, prober, admin.services, metering if metered else None, metrics)
    services: list[Service] = [storage, gate, catalog, started, prober, *extra_services, live]
    if crypto is not None:
        services.insert(1, crypto)  # right after storage: it needs the database, and closes before it
    if state is not None:
        services.insert(2, state)  # after the keyring it seals with
    if memory is not None:
        services.insert(3, memory)  # after the keyring it seals with
    if telemetry is not None:
        services.insert(0, telemetry)  # up before calls are served, flushed after the rest closed
    if audit_log is not None:
        services.insert(0, audit_log)  # first up, last down: it records everything the others do
    if oidc is not None:
        services.append(oidc)
    if metrics is not None:
        services.append(metrics)  # after the others: it hooks the writers they made at start-up
    if background is not None:
        services.append(background)  # last up, first down: its runs hand their jobs back before the rest closes
    drain = Drain(config.server.drain_timeout_s)
    gateway = Gateway(pipeline, auth, doors, services=services, admin=admin, drain=drain)
    if metrics is not None:
        gateway.on_request = metrics.http_request
    return gateway


def served_app(
    config: Config,
    listening: str | None = None,
    config_path: str | None = None,
    adjust: Callable[[Config], None] | None = None,
    version: str | None = None,
) -> Gateway:
    """The app as uvicorn serves it: its stop signals start the gateway's drain (api/drain.py), SIGHUP
    reloads `config_path` (live_config.py; `adjust`: what was changed in `config` after it was read, done
    to a reloaded one too), and start-up logs where it listens."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until start-up installs the reload: never a reason to exit
    gateway = build_app(config, config_path)
    gateway.drain.on_signals = True
    gateway.listening = listening
    for service in gateway.services:
        if isinstance(service, LiveConfig):
            service.on_signals = True
            service.supervisor = os.getppid() if SUPERVISED_ENV in os.environ else None
            service.adjust = adjust
            if version is not None:  # the file's version `config` was parsed from, not read again later
                service.version = version
    return gateway


def _usable_key(storage: StorageService):
    """A managed key's record by its id while it is usable (looked for again after a miss: it may have been
    created moments ago on another replica)."""

    async def usable(key_id: str) -> Any:
        found = storage.key_by_id(key_id)
        if found is None and await storage.refresh_after_miss():
            found = storage.key_by_id(key_id)
        return found

    return usable


def _known_tenant(storage: StorageService, static_tenant: str):
    """Whether a tenant id exists: the static keys' tenant, or a stored one (looked for again after a miss,
    as for a token's tenant: it may have just been created on another replica)."""

    async def known(tenant: str) -> bool:
        if tenant == static_tenant or tenant in storage.known_tenants():
            return True
        return await storage.refresh_after_miss() and tenant in storage.known_tenants()

    return known


def _metrics(config: Config, catalog, breakers, metering, accounting, audit_log, call_log, crypto, telemetry):
    """The Prometheus metrics (observability/metrics.py), fed with each call and its cost by metering."""
    from .observability.call_metrics import attach
    from .observability.metrics import Metrics, Sources

    metrics = Metrics(
        catalog.groups,
        catalog.deployments,
        static_tenants=[config.identity.static_keys_tenant],
        publish_interval_s=config.metrics.publish_interval_s,
        headroom=config.metrics.headroom,
    )
    attach(metrics, metering, accounting)  # nothing else metered: straight from the tracker, no record
    metrics.sources = Sources(
        deployments=tuple(catalog.deployments),
        breakers=breakers,
        usage_writer=lambda: metering.writer,
        audit=audit_log,
        call_log=call_log,
        capture=(lambda: crypto.capture) if crypto is not None else None,
        telemetry=telemetry,
        keyring=(lambda: crypto.keyrings.keyring) if crypto is not None else None,
        limiter=metering.limiter,  # budgets may be set later through the admin API
    )
    return metrics


def _oidc(config: Config):
    if not config.identity.oidc:
        return None
    from .identity.oidc import OidcVerifier

    return OidcVerifier(list(config.identity.oidc))


class _Lazy:
    """Stands in for an object a service creates at start-up (the store, its snapshot cache)."""

    __slots__ = ("_owner", "_attr")

    def __init__(self, owner, attr: str) -> None:
        _SET_OWNER(self, owner)
        _SET_ATTR(self, attr)

    def __getattribute__(self, name: str):
        # Every read forwarded from here, not from __getattr__: on 3.11 that runs only after the ordinary
        # lookup failed, which raises and clears an AttributeError per read (~2,000 instructions; the
        # policy gate reads the snapshot through one per call). The slots are read by their descriptors.
        return getattr(getattr(_OWNER(self), _ATTR(self)), name)


_OWNER, _ATTR = _Lazy.__dict__["_owner"].__get__, _Lazy.__dict__["_attr"].__get__
_SET_OWNER, _SET_ATTR = _Lazy.__dict__["_owner"].__set__, _Lazy.__dict__["_attr"].__set__


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
    config, version = read_config(os.environ[CONFIG_ENV])
    _as_worker(config)
    return served_app(config, os.environ.get(LISTEN_ENV), os.environ[CONFIG_ENV], _as_worker, version)


def _as_worker(config: Config) -> None:
    """What a `--workers` process changes in the config it reads (at start-up and at each reload)."""
    # Workers of one process share its environment, so they cannot each hold the replica id.
    config.responses.background.replica_id_env = None
    if DRAIN_ENV in os.environ:
        config.server.drain_timeout_s = check_drain_timeout(float(os.environ[DRAIN_ENV]), DRAIN_ENV)
