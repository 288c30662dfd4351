"""YAML config -> typed, validated config. Errors name the key path and what is wrong.

Secrets never live in the file: providers and gateway keys name environment variables.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from collections.abc import Iterator
from typing import Annotated, Literal

import msgspec
import yaml

from .audit.config import AuditConfig
from .contracts.config import ContractsConfig, ContractsConfigError
from .contracts.config import check as check_contracts
from .identity.oidc_config import IssuerConfig
from .metering.config import MeteringConfig
from .metering.config import check as check_metering

CAPABILITIES = frozenset(
    {"chat", "embeddings", "streaming", "tools", "parallel_tools", "vision", "json_schema", "reasoning", "stateful"}
)
DEFAULT_CHAT_CAPS = ("chat", "streaming", "tools", "parallel_tools", "vision", "json_schema")
# Declines a model group may fail over on (see docs/routing.md for what produces each).
DECLINES = frozenset({"capacity", "unavailable", "refusal", "unsupported", "context_overflow"})
STRATEGIES = ("primary-first", "lowest-cost", "lowest-latency", "weighted", "commitment-burn-down")


# Numbers a config may hold. Impossible values (a negative price, a zero window) are refused at load
# with the key path, so no later arithmetic (costs, budgets, reservations) ever sees them.
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]
PositiveCount = Annotated[int, msgspec.Meta(ge=1)]
# Prices are per million tokens; no model costs a million units of currency per million tokens.
PricePerMillion = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class ConfigError(Exception):
    """Config problems, each phrased as `path: what is wrong`; str() gives one per line."""

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice in one mapping (first on line {seen[key] + 1})", key_node.start_mark
                )
            try:
                seen[key] = key_node.start_mark.line
            except TypeError:
                pass  # an unhashable key: SafeLoader reports it itself
        return super().construct_mapping(node, deep=deep)


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class EntraAuth(_Strict):
    # With no ids, azure-identity's DefaultAzureCredential chain is used (managed identity, env, CLI...).
    tenant_id_env: str | None = None
    client_id_env: str | None = None
    client_secret_env: str | None = None
    scope: str = "https://cognitiveservices.azure.com/.default"


class AwsAuth(_Strict):
    # Unset fields fall back to botocore's standard credential chain (env, profile, IMDS...).
    profile: str | None = None
    role_arn: str | None = None
    role_session_name: str = "multihome"
    external_id_env: str | None = None


class GoogleAuth(_Strict):
    # Unset: google-auth's application default credentials.
    service_account_file_env: str | None = None
    scope: str = "https://www.googleapis.com/auth/cloud-platform"


class ProviderAuth(_Strict):
    api_key_env: str | None = None
    entra: EntraAuth | None = None
    aws: AwsAuth | None = None
    google: GoogleAuth | None = None


PROVIDER_KINDS = ("openai", "azure", "bedrock", "anthropic", "gemini", "vertex")
# Kinds whose public endpoint is derived (from region/project) when `endpoint` is not set.
_DERIVED_ENDPOINT = frozenset({"bedrock", "anthropic", "gemini", "vertex"})


class Provider(_Strict):
    kind: Literal["openai", "azure", "bedrock", "anthropic", "gemini", "vertex"]
    endpoint: str | None = None
    region: str | None = None
    data_zone: str | None = None
    auth: ProviderAuth = msgspec.field(default_factory=ProviderAuth)
    # Azure: a dated api-version for deployment URLs, or "v1" for the /openai/v1/ form (default
    # 2024-10-21). Anthropic: the anthropic-version header (default 2023-06-01).
    api_version: str | None = None
    project: str | None = None  # vertex: Google Cloud project id
    max_connections: PositiveCount = 2048  # pooled connections to this provider; streams hold one each


class Price(_Strict):
    # Per million tokens, in `currency`.
    input: PricePerMillion = 0.0
    output: PricePerMillion = 0.0
    cached_input: PricePerMillion | None = None
    currency: str = "USD"


class Deployment(_Strict):
    provider: str
    model: str
    capabilities: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_CHAT_CAPS))
    context_window: PositiveCount | None = None
    max_output_tokens: PositiveCount | None = None
    price: Price | None = None
    commitment: str | None = None  # committed-spend pool this deployment draws on


class Breaker(_Strict):
    # Opens after this many consecutive failures (429, 5xx, timeouts, dropped connections)...
    consecutive_failures: Count = 5  # 0: only the error rate opens it
    # ...or when at least `min_requests` in the last `window_s` failed at this rate (0 disables).
    error_rate: Fraction = 0.0
    min_requests: PositiveCount = 20
    window_s: Positive = 30.0
    # How long it stays open before one half-open probe call is let through.
    cooldown_s: NonNegative = 30.0


class Timeouts(_Strict):
    connect_s: Positive = 5.0
    first_byte_s: Positive = 60.0
    total_s: Positive = 600.0  # one attempt, first byte to last
    budget_s: Positive | None = None  # the whole call across every attempt and backoff


class ModelGroup(_Strict):
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


class HealthProbe(_Strict):
    # Probe deployments whose breaker is open this often (0: off; docs/routing.md).
    interval_s: NonNegative = 0.0
    timeout_s: Positive = 5.0


class Routing(_Strict):
    breaker: Breaker = msgspec.field(default_factory=Breaker)
    health_probe: HealthProbe = msgspec.field(default_factory=HealthProbe)
    # Shares breaker state across replicas; unset = per process.
    redis_url_env: str | None = None
    latency_ewma_alpha: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2


class Storage(_Strict):
    # SQLAlchemy URL: sqlite+aiosqlite:///path/multihome.db (default, embedded) or
    # postgresql+asyncpg://host/db. A URL with a password belongs in an environment variable.
    url: str | None = None
    url_env: str | None = None
    refresh_s: Positive = 0.25  # how often replicas look for changes (key revocation, policies)


class Identity(_Strict):
    oidc: list[IssuerConfig] = msgspec.field(default_factory=list)
    # An org-admin key from the environment, to bootstrap the admin API (create the first tenant).
    admin_key_env: str | None = None
    # Tenant that keys from server.api_keys_env belong to.
    static_keys_tenant: str = "default"


class Server(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 4000
    max_body_bytes: PositiveCount = 20 * 1024 * 1024
    # Request line plus headers; a longer head is refused with 431 before it is read in full.
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    # Environment variables holding the API keys clients may present (identity grows in its own issue).
    api_keys_env: list[str] = msgspec.field(default_factory=list)
    allow_unauthenticated: bool = False
    # Append one JSON line per call (who, what, where, outcome, tokens, hashes; never content).
    call_log: str | None = None
    # Graceful stop (SIGTERM): how long calls in flight may still finish; a stream still open then
    # ends with an error event (docs/serving.md). `multihome serve --drain-timeout` overrides it.
    drain_timeout_s: float = 5.0


class Telemetry(_Strict):
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


class Config(_Strict):
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
    telemetry: Telemetry | None = None


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _path_problem(exc: msgspec.ValidationError, type_: type, prefix: str) -> str:
    text = str(exc)
    match = _AT.search(text)
    sub = match.group("path") if match else ""
    path = (prefix + sub).lstrip(".") or "(top level)"
    what = text[: match.start()] if match else text
    if what.startswith("Invalid enum value"):
        valid = _literal_values(type_, sub)
        if valid:
            what += f" (valid: {', '.join(map(str, valid))})"
    return f"{path}: {what}"


_SEGMENT = re.compile(r"\.(\w+)|\[[^\]]*\]")


def _literal_values(type_: type, path: str) -> tuple | None:
    """The allowed values of the Literal field at `path` (msgspec's `.a[0].b` form), if it is one."""
    info = msgspec.inspect.type_info(type_)
    for match in _SEGMENT.finditer(path):
        info = _unwrap(info)
        if match.group(1) is not None:
            fields = {f.name: f.type for f in getattr(info, "fields", ())}
            if match.group(1) not in fields:
                return None
            info = fields[match.group(1)]
        else:
            info = getattr(info, "item_type", None) or getattr(info, "value_type", None)
            if info is None:
                return None
    info = _unwrap(info)
    return info.values if isinstance(info, msgspec.inspect.LiteralType) else None


def _unwrap(info):
    """`X | None` -> X, for walking a path through optional fields."""
    if isinstance(info, msgspec.inspect.UnionType):
        rest = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(rest) == 1:
            return rest[0]
    return info


def _convert(data: object, type_: type, prefix: str, problems: list[str]):
    """The typed value, or None after adding the problem (with its key path) to `problems`."""
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        problems.append(_path_problem(exc, type_, prefix))
        return None


# Sections keyed by user-chosen names are converted entry by entry so errors name the entry.
_SECTIONS = {"providers": Provider, "deployments": Deployment, "model_groups": ModelGroup}
_SINGLES = {"server": Server, "routing": Routing, "storage": Storage, "identity": Identity, "metering": MeteringConfig,
            "audit": AuditConfig, "contracts": ContractsConfig}


def load_config(path: str | os.PathLike[str]) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "<config>") -> Config:
    """The typed config, or a ConfigError listing every problem found (one per line)."""
    problems: list[str] = []
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping with providers, deployments and model_groups")
    known = ", ".join([*_SINGLES, "telemetry", *_SECTIONS])
    for key in sorted(set(data) - set(_SECTIONS) - set(_SINGLES) - {"telemetry"}, key=str):
        problems.append(f"{key}: unknown top-level key (known: {known})")
    sections: dict[str, dict] = {}
    names: dict[str, set[str]] = {}
    for section, type_ in _SECTIONS.items():
        entries = data.get(section)
        if not isinstance(entries, dict):
            problems.append(f"{section}: required, a mapping of name -> {section[:-1].replace('_', ' ')}")
            entries = {}
        names[section] = {str(name) for name in entries}
        converted = {str(name): _convert(entry, type_, f"{section}.{name}", problems) for name, entry in entries.items()}
        sections[section] = {name: value for name, value in converted.items() if value is not None}
    parts = {}
    for name, type_ in _SINGLES.items():
        parts[name] = _convert(data.get(name) or {}, type_, name, problems) or type_()
    telemetry = data.get("telemetry")
    if telemetry is not None:
        parts["telemetry"] = _convert(telemetry, Telemetry, "telemetry", problems)
        if parts["telemetry"] is not None:
            problems.extend(_telemetry_problems(parts["telemetry"]))
    config = Config(**parts, **sections)
    problems.extend(_reference_problems(config, names))
    problems.extend(check_metering(config.metering, names["deployments"]))
    try:
        check_contracts(config.contracts, names["providers"])
    except ContractsConfigError as exc:
        problems.append(str(exc))
    if (config.contracts.revenue_share or config.contracts.commitments) and not (config.storage.url or config.storage.url_env):
        problems.append("contracts: the contract ledger needs storage (set storage.url or storage.url_env)")
    if problems:
        raise ConfigError(*problems)
    return config


def _reference_problems(config: Config, names: dict[str, set[str]]) -> Iterator[str]:
    """Cross-field problems. `names` holds every entry name in the file, converted or not, so an
    entry with a type error is not also reported as unknown where it is referenced."""
    for name, prov in config.providers.items():
        if prov.endpoint is None:
            if prov.kind not in _DERIVED_ENDPOINT:
                yield (f"providers.{name}.endpoint: required for kind '{prov.kind}'")
        elif not prov.endpoint.startswith(("http://", "https://")):
            yield (f"providers.{name}.endpoint: must start with http:// or https://")
        if prov.kind in ("bedrock", "vertex") and not prov.region:
            yield (f"providers.{name}.region: required for kind '{prov.kind}'")
        if prov.kind == "vertex" and not prov.project:
            yield (f"providers.{name}.project: required for kind 'vertex'")
        methods = [m for m in ("api_key_env", "entra", "aws", "google") if getattr(prov.auth, m)]
        if len(methods) > 1:
            yield (f"providers.{name}.auth: set one of {', '.join(methods)}, not several")
        for method, kinds in (("entra", ("azure",)), ("aws", ("bedrock",)), ("google", ("vertex",))):
            if getattr(prov.auth, method) and prov.kind not in kinds:
                yield (f"providers.{name}.auth.{method}: only for kind {' or '.join(kinds)}")
    for name, dep in config.deployments.items():
        if dep.provider not in names["providers"]:
            yield (
                f"deployments.{name}.provider: unknown provider '{dep.provider}' "
                f"(known: {', '.join(sorted(names['providers'])) or 'none'})"
            )
        for i, cap in enumerate(dep.capabilities):
            if cap not in CAPABILITIES:
                yield (
                    f"deployments.{name}.capabilities[{i}]: unknown capability '{cap}' "
                    f"(known: {', '.join(sorted(CAPABILITIES))})"
                )
    for name, group in config.model_groups.items():
        if not group.deployments:
            yield (f"model_groups.{name}.deployments: list at least one deployment; the first is the primary")
        for i, dep in enumerate(group.deployments):
            if dep not in names["deployments"]:
                yield (f"model_groups.{name}.deployments[{i}]: unknown deployment '{dep}'")
        if len(set(group.deployments)) != len(group.deployments):
            yield (f"model_groups.{name}.deployments: a deployment is listed twice")
        for i, decline in enumerate(group.fail_over_on):
            if decline not in DECLINES:
                yield (
                    f"model_groups.{name}.fail_over_on[{i}]: unknown decline '{decline}' (known: {', '.join(sorted(DECLINES))})"
                )
        for dep, weight in group.weights.items():
            if dep not in group.deployments:
                yield (f"model_groups.{name}.weights.{dep}: not one of this group's deployments")
            if not weight >= 0:  # also refuses NaN
                yield (f"model_groups.{name}.weights.{dep}: must not be negative")
        for i, other in enumerate(group.fallback_groups):
            if other not in names["model_groups"] or other == name:
                yield (f"model_groups.{name}.fallback_groups[{i}]: unknown model group '{other}'")
    has_identity = config.server.api_keys_env or config.storage.url or config.storage.url_env or config.identity.oidc
    if not has_identity and not config.server.allow_unauthenticated:
        yield (
            "server.api_keys_env: name at least one environment variable holding a client API key "
            "(or configure storage for managed keys, or identity.oidc), or set server.allow_unauthenticated: true"
        )
    if config.storage.url and config.storage.url_env:
        yield ("storage: set url or url_env, not both")
    names = [i.name for i in config.identity.oidc]
    if len(set(names)) != len(names):
        yield ("identity.oidc: issuer names must be unique")
    try:
        check_drain_timeout(config.server.drain_timeout_s, "server.drain_timeout_s")
    except ConfigError as exc:
        yield str(exc)


MAX_DRAIN_TIMEOUT_S = 3600.0


def check_drain_timeout(value: float, where: str) -> float:
    """The graceful-stop deadline, from the config file or `--drain-timeout`."""
    if not 0 <= value <= MAX_DRAIN_TIMEOUT_S:  # NaN fails this too
        raise ConfigError(
            f"{where}: must be a number of seconds from 0 (cut open streams at once) to {MAX_DRAIN_TIMEOUT_S:g}, "
            f"got {value!r}"
        )
    return value


def _telemetry_problems(t: Telemetry) -> Iterator[str]:
    if (t.otlp_endpoint is None) == (t.otlp_endpoint_env is None):
        yield ("telemetry: set one of otlp_endpoint or otlp_endpoint_env (the OTLP/HTTP base URL)")
    if t.otlp_endpoint is not None and not t.otlp_endpoint.startswith(("http://", "https://")):
        yield ("telemetry.otlp_endpoint: must start with http:// or https://")
    if not 0.0 <= t.sample_ratio <= 1.0:
        yield ("telemetry.sample_ratio: must be between 0 and 1")
    for name in ("export_timeout_s", "metrics_interval_s", "batch_delay_ms", "max_queue", "shutdown_timeout_s"):
        if getattr(t, name) <= 0:
            yield (f"telemetry.{name}: must be greater than 0")
    if not t.service_name:
        yield ("telemetry.service_name: must not be empty")


def named_env_vars(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """(key path, variable) for every environment variable the config names (`*_env` fields)."""
    if isinstance(value, msgspec.Struct):
        for field in value.__struct_fields__:
            item = getattr(value, field)
            where = f"{path}.{field}".lstrip(".")
            if field.endswith("_env") and isinstance(item, str):
                yield where, item
            elif field.endswith("_env") and isinstance(item, list):
                yield from ((f"{where}[{i}]", var) for i, var in enumerate(item) if isinstance(var, str))
            else:
                yield from named_env_vars(item, where)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from named_env_vars(item, f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from named_env_vars(item, f"{path}[{i}]")


def env_secret(var: str | None, *, what: str) -> str | None:
    """Read a secret from the environment; a named but unset variable is a start-up error."""
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"{what}: environment variable {var} is not set")
    return value
