"""The typed config: one struct per section of the YAML file (see examples/ and docs/).

Secrets never live in the file: providers and gateway keys name environment variables.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ..providers.registry import NAMES as PROVIDER_KINDS
from .audit import AuditConfig
from .capture import CaptureConfig
from .console import ConsoleConfig
from .contracts import ContractsConfig
from .egress import EgressConfig
from .kms import KmsConfig
from .memory import MemoryConfig
from .metering import MeteringConfig
from .metrics import MetricsConfig
from .oidc import IssuerConfig
from .responses import ResponsesConfig
from .struct import Count, Fraction, NonNegative, Positive, PositiveCount, PricePerMillion, Strict

CAPABILITIES = frozenset(
    {"chat", "embeddings", "streaming", "tools", "parallel_tools", "vision", "json_schema", "reasoning", "stateful"}
)
DEFAULT_CHAT_CAPS = ("chat", "streaming", "tools", "parallel_tools", "vision", "json_schema")
# Declines a model group may fail over on (see docs/routing.md for what produces each).
DECLINES = frozenset({"capacity", "unavailable", "refusal", "unsupported", "context_overflow"})
STRATEGIES = ("primary-first", "lowest-cost", "lowest-latency", "weighted", "commitment-burn-down")


class EntraAuth(Strict):
    # With no ids, azure-identity's DefaultAzureCredential chain is used (managed identity, env, CLI...).
    tenant_id_env: str | None = None
    client_id_env: str | None = None
    client_secret_env: str | None = None
    # The token's scope; unset: the kind's own (Azure OpenAI: https://cognitiveservices.azure.com/.default,
    # Claude on Foundry: https://ai.azure.com/.default).
    scope: str | None = None


class AwsAuth(Strict):
    # Unset fields fall back to botocore's standard credential chain (env, profile, IMDS...).
    profile: str | None = None
    role_arn: str | None = None
    role_session_name: str = "multihome"
    external_id_env: str | None = None


class GoogleAuth(Strict):
    # Unset: google-auth's application default credentials.
    service_account_file_env: str | None = None
    scope: str = "https://www.googleapis.com/auth/cloud-platform"


class ProviderAuth(Strict):
    api_key_env: str | None = None
    # "store": the API key is set through the admin API (PUT /admin/v1/provider-credentials/<name>)
    # and kept sealed in the database; "env": from api_key_env (or another method below).
    api_key_from: Literal["env", "store"] = "env"
    entra: EntraAuth | None = None
    aws: AwsAuth | None = None
    google: GoogleAuth | None = None


# The kinds come from the provider registry (each kind's descriptor in providers/<kind>/), so a new
# provider kind is accepted here without an edit; the per-kind rules are checked in load.py.
ProviderKindName = Literal[PROVIDER_KINDS]  # type: ignore[valid-type]  # a Literal built from data


class Provider(Strict):
    kind: ProviderKindName
    endpoint: str | None = None
    region: str | None = None
    data_zone: str | None = None
    auth: ProviderAuth = msgspec.field(default_factory=ProviderAuth)
    # Azure: a dated api-version for deployment URLs, or "v1" for the /openai/v1/ form (default
    # 2024-10-21). Anthropic: the anthropic-version header (default 2023-06-01).
    api_version: str | None = None
    project: str | None = None  # vertex: Google Cloud project id
    max_connections: PositiveCount = 2048  # pooled connections to this provider; streams hold one each


class TierPrice(Strict):
    # Per million tokens, in the deployment's price's currency, for calls that ask for this tier.
    input: PricePerMillion = 0.0
    output: PricePerMillion = 0.0
    cached_input: PricePerMillion | None = None


class Price(Strict):
    # Per million tokens, in `currency`.
    input: PricePerMillion = 0.0
    output: PricePerMillion = 0.0
    cached_input: PricePerMillion | None = None
    currency: str = "USD"
    # Prices of the `service_tier`s besides auto and default (which are priced above), by tier name
    # (schema/tiers.py PRICED_TIERS). A call asking for a tier not listed is not sent here.
    tiers: dict[str, TierPrice] | None = None


class Deployment(Strict):
    provider: str
    model: str
    capabilities: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_CHAT_CAPS))
    context_window: PositiveCount | None = None
    max_output_tokens: PositiveCount | None = None
    price: Price | None = None
    commitment: str | None = None  # committed-spend pool this deployment draws on
    # The data zone of this deployment when it differs from its provider's: one Foundry or Azure
    # resource holds Global and Data Zone deployments side by side (docs/translation/foundry.md).
    data_zone: str | None = None
    # How a Responses API call reaches this deployment: "native" sends the whole context to the
    # provider's own Responses API with store: false when its kind has one (openai, azure), else the
    # call is translated to a chat call; "translated" always translates (docs/responses.md).
    responses_api: Literal["native", "translated"] = "native"


class Breaker(Strict):
    # Opens after this many consecutive failures (429, 5xx, timeouts, dropped connections)...
    consecutive_failures: Count = 5  # 0: only the error rate opens it
    # ...or when at least `min_requests` in the last `window_s` failed at this rate (0 disables).
    error_rate: Fraction = 0.0
    min_requests: PositiveCount = 20
    window_s: Positive = 30.0
    # How long it stays open before one half-open probe call is let through.
    cooldown_s: NonNegative = 30.0


class Timeouts(Strict):
    connect_s: Positive = 5.0
    first_byte_s: Positive = 60.0
    total_s: Positive = 600.0  # one attempt, first byte to last
    budget_s: Positive | None = None  # the whole call across every attempt and backoff


class ModelGroup(Strict):
    deployments: list[str]
    strategy: Literal["primary-first", "lowest-cost", "lowest-latency", "weighted", "commitment-burn-down"] = (
        "primary-first"
    )
    weights: dict[str, float] = msgspec.field(default_factory=dict)  # strategy: weighted
    retries: Annotated[int, msgspec.Meta(ge=0, le=100)] = 1
    backoff_ms: Count = 100
    max_retry_after_s: NonNegative = 2.0
    fail_over_on: list[str] = msgspec.field(
        default_factory=lambda: ["capacity", "unavailable", "unsupported", "context_overflow"]
    )
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    # Start the next deployment when the first has not answered (first byte) after this long.
    hedge_after_ms: Count | None = None
    # Groups to try, in order, when every deployment of this one declined.
    fallback_groups: list[str] = msgspec.field(default_factory=list)
    # A licensed model: tenants need an active entitlement (granted through the admin API).
    requires_entitlement: bool = False


class HealthProbe(Strict):
    # Probe deployments whose breaker is open this often (0: off; docs/routing.md).
    interval_s: NonNegative = 0.0
    timeout_s: Positive = 5.0


class Routing(Strict):
    breaker: Breaker = msgspec.field(default_factory=Breaker)
    health_probe: HealthProbe = msgspec.field(default_factory=HealthProbe)
    # Shares breaker state across replicas; unset = per process.
    redis_url_env: str | None = None
    latency_ewma_alpha: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2


class Storage(Strict):
    # SQLAlchemy URL: sqlite+aiosqlite:///path/multihome.db (default, embedded) or
    # postgresql+asyncpg://host/db. A URL with a password belongs in an environment variable.
    url: str | None = None
    url_env: str | None = None
    refresh_s: Positive = 0.25  # how often replicas look for changes (key revocation, policies)
    # SQLite only: how a stored response or conversation turn is committed before its answer returns.
    # "full": fsynced (survives power loss); "normal": in the WAL, visible to every reader (survives a
    # crash of the gateway, not of the machine). docs/storage.md "Stored responses: durability".
    state_sync: Literal["full", "normal"] = "full"


class Identity(Strict):
    oidc: list[IssuerConfig] = msgspec.field(default_factory=list)
    # An org-admin key from the environment, to bootstrap the admin API (create the first tenant).
    admin_key_env: str | None = None
    # Tenant that keys from server.api_keys_env belong to.
    static_keys_tenant: str = "default"


class Server(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 4000
    max_body_bytes: PositiveCount = 20 * 1024 * 1024
    # Request line plus headers; a longer head is refused with 431 before it is read in full.
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    # A request whose head or body stops arriving (nothing read for this long, checked as often) is answered
    # 408 and its connection closed: a client cannot hold a connection open by never finishing a request.
    client_idle_timeout_s: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 30.0
    # Threads that run every upstream call's I/O (pyqwest's Tokio runtime, per process; Tokio's default is
    # one per core in each worker process). One keeps up with the event loop's thread, which is what limits
    # a worker (docs/serving.md). Applied by `serve` and `demo` before the first upstream call.
    upstream_threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # Environment variables holding the API keys clients may present (identity grows in its own issue).
    api_keys_env: list[str] = msgspec.field(default_factory=list)
    allow_unauthenticated: bool = False
    # Append one JSON line per call (who, what, where, outcome, tokens, hashes; never content).
    call_log: str | None = None
    # Graceful stop (SIGTERM): how long calls in flight may still finish; a stream still open then
    # ends with an error event (docs/serving.md). `multihome serve --drain-timeout` overrides it.
    drain_timeout_s: float = 5.0
    # `text` (default): one human-readable line per record; `json`: one JSON object per line
    # (time, level, logger, message and the line's fields), for log shippers (docs/metrics.md).
    log_format: Literal["text", "json"] = "text"


class Telemetry(Strict):
    """OpenTelemetry export of every call (docs/telemetry.md). Absent section: nothing is loaded."""

    otlp_endpoint: str | None = None  # OTLP/HTTP base URL, e.g. http://collector:4318 (/v1/traces is added)
    otlp_endpoint_env: str | None = None
    headers_env: str | None = None  # env var holding `k=v,k2=v2` export headers (a secret: never logged)
    service_name: str = "multihome"
    sample_ratio: float = 1.0  # share of new traces kept; a client's traceparent decides for its own trace
    export_timeout_s: float = 10.0  # one export request
    metrics: bool = True  # gen_ai.client.* histograms
    metrics_interval_s: float = 60.0
    batch_delay_ms: int = 1000  # longest a finished span waits for its batch
    max_queue: int = 8192  # spans waiting for export; beyond this the oldest are dropped
    shutdown_timeout_s: float = 5.0  # deadline for the final flush at shutdown


class Config(Strict):
    providers: dict[str, Provider]
    deployments: dict[str, Deployment]
    model_groups: dict[str, ModelGroup]
    server: Server = msgspec.field(default_factory=Server)
    routing: Routing = msgspec.field(default_factory=Routing)
    storage: Storage = msgspec.field(default_factory=Storage)
    identity: Identity = msgspec.field(default_factory=Identity)
    metering: MeteringConfig = msgspec.field(default_factory=MeteringConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    contracts: ContractsConfig = msgspec.field(default_factory=ContractsConfig)
    kms: KmsConfig = msgspec.field(default_factory=KmsConfig)
    capture: CaptureConfig = msgspec.field(default_factory=CaptureConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
    responses: ResponsesConfig = msgspec.field(default_factory=ResponsesConfig)
    egress: EgressConfig = msgspec.field(default_factory=EgressConfig)
    memory: MemoryConfig = msgspec.field(default_factory=MemoryConfig)
    telemetry: Telemetry | None = None
