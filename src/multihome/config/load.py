"""YAML config -> typed, validated `Config`; every problem found is reported at once, each naming
its key path (and, for a closed set of values, the valid ones)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ..providers.registry import BY_NAME as KIND_BY_NAME
from ..providers.registry import KINDS, ProviderKind
from ..schema.tiers import PRICED_TIERS
from .audit import AuditConfig
from .capture import CaptureConfig
from .console import ConsoleConfig
from .contracts import ContractsConfig, ContractsConfigError
from .contracts import check as check_contracts
from .contracts import misspelled as misspelled_contract
from .decimals import places
from .egress import EgressConfig
from .errors import DATE_GOT_TIME, DATE_NOT_TIME, ConfigError
from .kms import KmsConfig
from .kms import check as check_kms
from .memory import MemoryConfig
from .memory import check as memory_problems
from .metering import MeteringConfig, currency_problem
from .metering import check as check_metering
from .metrics import MetricsConfig
from .model import (
    CAPABILITIES,
    DECLINES,
    Config,
    Deployment,
    Identity,
    ModelGroup,
    Price,
    Provider,
    ProviderAuth,
    Routing,
    Server,
    Storage,
    Telemetry,
    TierPrice,
)
from .responses import ResponsesConfig
from .yaml_source import read_yaml

_AUTH_METHODS = tuple(
    f.name for f in msgspec.structs.fields(ProviderAuth) if f.name != "api_key_from"
)  # in the order messages list them
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
    elif what == DATE_GOT_TIME:
        what += DATE_NOT_TIME
    return f"{path}: {what}"


_SEGMENT = re.compile(r"\.(\w+)|\[[^\]]*\]")


def _literal_values(type_: type, path: str) -> tuple[bool | str | int | None, ...] | None:
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
            item = getattr(info, "item_type", None) or getattr(info, "value_type", None)
            if item is None:
                return None
            info = item
    info = _unwrap(info)
    return info.values if isinstance(info, msgspec.inspect.LiteralType) else None


def _unwrap(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """`X | None` -> X, for walking a path through optional fields."""
    if isinstance(info, msgspec.inspect.UnionType):
        rest = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(rest) == 1:
            return rest[0]
    return info


_T = TypeVar("_T")


def _convert(data: object, type_: type[_T], prefix: str, problems: list[str]) -> _T | None:
    """The typed value, or None after adding the problem (with its key path) to `problems`."""
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        problems.append(_path_problem(exc, type_, prefix))
        return None


# Sections keyed by user-chosen names are converted entry by entry so errors name the entry.
_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "providers": Provider,
    "deployments": Deployment,
    "model_groups": ModelGroup,
}
_SINGLES: dict[str, type[msgspec.Struct]] = {
    "server": Server,
    "routing": Routing,
    "storage": Storage,
    "identity": Identity,
    "metering": MeteringConfig,
    "audit": AuditConfig,
    "contracts": ContractsConfig,
    "kms": KmsConfig,
    "capture": CaptureConfig,
    "metrics": MetricsConfig,
    "console": ConsoleConfig,
    "responses": ResponsesConfig,
    "egress": EgressConfig,
    "memory": MemoryConfig,
}


def load_config(path: str | os.PathLike[str]) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "<config>") -> Config:
    """The typed config, or a ConfigError listing every problem found (one per line)."""
    problems: list[str] = []
    data = read_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping with providers, deployments and model_groups")
    known = ", ".join([*_SINGLES, "telemetry", *_SECTIONS])
    for key in sorted(set(data) - set(_SECTIONS) - set(_SINGLES) - {"telemetry"}, key=str):
        problems.append(f"{key}: unknown top-level key (known: {known})")
    sections: dict[str, dict[str, Any]] = {}  # each section's own struct type
    names: dict[str, set[str]] = {}
    for section, type_ in _SECTIONS.items():
        entries = data.get(section)
        if not isinstance(entries, dict):
            problems.append(f"{section}: required, a mapping of name -> {section[:-1].replace('_', ' ')}")
            entries = {}
        names[section] = {str(name) for name in entries}
        converted = {
            str(name): _convert(entry, type_, f"{section}.{name}", problems) for name, entry in entries.items()
        }
        sections[section] = {name: value for name, value in converted.items() if value is not None}
    parts: dict[str, Any] = {}  # each single section's own struct type
    for name, type_ in _SINGLES.items():
        parts[name] = _convert(data.get(name) or {}, type_, name, problems) or type_()
    telemetry = data.get("telemetry")
    if telemetry is not None:
        parts["telemetry"] = _convert(telemetry, Telemetry, "telemetry", problems)
        if parts["telemetry"] is not None:
            problems.extend(_telemetry_problems(parts["telemetry"]))
    config = Config(
        **parts,
        providers=sections["providers"],
        deployments=sections["deployments"],
        model_groups=sections["model_groups"],
    )
    problems.extend(_reference_problems(config, names))
    problems.extend(check_metering(config.metering, names["deployments"]))
    problems.extend(check_kms(config.kms))
    try:
        misspelled = misspelled_contract(data.get("contracts"))
        if misspelled is not None:  # before the checks of the values Decimal() read from it
            raise ContractsConfigError(misspelled)
        check_contracts(config.contracts, names["providers"], names["model_groups"])
    except ContractsConfigError as exc:
        problems.append(str(exc))
    if (config.contracts.revenue_share or config.contracts.commitments) and not (
        config.storage.url or config.storage.url_env
    ):
        problems.append("contracts: the contract ledger needs storage (set storage.url or storage.url_env)")
    if problems:
        raise ConfigError(*problems)
    return config


def _reference_problems(config: Config, names: dict[str, set[str]]) -> Iterator[str]:
    """Cross-field problems. `names` holds every entry name in the file, converted or not, so an
    entry with a type error is not also reported as unknown where it is referenced."""
    for name, prov in config.providers.items():
        kind = KIND_BY_NAME[prov.kind]  # what each kind needs is data in its descriptor
        if prov.endpoint is None:
            if kind.default_endpoint is None:
                yield (f"providers.{name}.endpoint: required for kind '{prov.kind}'")
        elif not prov.endpoint.startswith(("http://", "https://")):
            yield (f"providers.{name}.endpoint: must start with http:// or https://")
        for field in kind.requires:
            if not getattr(prov, field):
                yield (f"providers.{name}.{field}: required for kind '{prov.kind}'")
        methods = [m for m in _AUTH_METHODS if getattr(prov.auth, m)]
        if len(methods) > 1:
            yield (f"providers.{name}.auth: set one of {', '.join(methods)}, not several")
        for method in methods:
            if method not in kind.auth_methods:
                kinds = [k.name for k in KINDS if method in k.auth_methods]
                yield (f"providers.{name}.auth.{method}: only for kind {' or '.join(kinds)}")
        if prov.auth.api_key_from == "store":
            yield from _stored_key_problems(config, name, prov, methods)
        yield from _zone_problems(f"providers.{name}.data_zone", prov.data_zone, kind, prov.region, "")
    for name, dep in config.deployments.items():
        if dep.provider not in names["providers"]:
            yield (
                f"deployments.{name}.provider: unknown provider '{dep.provider}' "
                f"(known: {', '.join(sorted(names['providers'])) or 'none'})"
            )
        prov_of = config.providers.get(dep.provider)
        if prov_of is not None:
            kind = KIND_BY_NAME[prov_of.kind]
            yield from _zone_problems(f"deployments.{name}", dep.data_zone, kind, prov_of.region, dep.model)
            if not kind.service_tier and dep.price is not None and dep.price.tiers:
                # Its calls run at the standard tier whatever was asked: a tier price would never be the
                # price of the processing used (docs/metering.md "Service tiers").
                yield (
                    f"deployments.{name}.price.tiers: {kind.title} takes no service_tier (the gateway's "
                    "translation drops it, so every call runs at the provider's standard tier, charged at the "
                    "price itself); remove `tiers`"
                )
        if dep.price is not None and (found := currency_problem(dep.price.currency)) is not None:
            yield f"deployments.{name}.price.currency: {found}"
        yield from _price_places(f"deployments.{name}.price", dep.price)
        for tier in dep.price.tiers or () if dep.price is not None else ():
            if tier not in PRICED_TIERS:
                yield (
                    f"deployments.{name}.price.tiers.{tier}: unknown service tier "
                    f"(known: {', '.join(PRICED_TIERS)}; auto and default are priced by the price itself)"
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
        for i, member in enumerate(group.deployments):
            if member not in names["deployments"]:
                yield (f"model_groups.{name}.deployments[{i}]: unknown deployment '{member}'")
        if len(set(group.deployments)) != len(group.deployments):
            yield (f"model_groups.{name}.deployments: a deployment is listed twice")
        for i, decline in enumerate(group.fail_over_on):
            if decline not in DECLINES:
                yield (
                    f"model_groups.{name}.fail_over_on[{i}]: unknown decline '{decline}' (known: {', '.join(sorted(DECLINES))})"
                )
        for member, weight in group.weights.items():
            if member not in group.deployments:
                yield (f"model_groups.{name}.weights.{member}: not one of this group's deployments")
            if not weight >= 0:  # also refuses NaN
                yield (f"model_groups.{name}.weights.{member}: must not be negative")
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
    if config.capture.tenants and not (config.storage.url or config.storage.url_env):
        yield ("capture.tenants: content capture keeps prompts and answers in the database; set storage.url")
    issuers = [i.name for i in config.identity.oidc]
    if len(set(issuers)) != len(issuers):
        yield ("identity.oidc: issuer names must be unique")
    sso = config.console.oidc
    if sso is not None:
        named = next((i for i in config.identity.oidc if i.name == sso.issuer), None)
        if named is None:
            yield (
                f"console.oidc.issuer: '{sso.issuer}' is not an identity.oidc issuer (known: {', '.join(issuers) or 'none'})"
            )
        elif sso.client_id not in named.audiences:
            yield (
                f"console.oidc.client_id: '{sso.client_id}' is not among identity.oidc '{named.name}' audiences: "
                "the ID token it gets would be refused"
            )
    yield from memory_problems(
        config.memory,
        {name: list(g.deployments) for name, g in config.model_groups.items()},
        {name: list(d.capabilities) for name, d in config.deployments.items()},
    )
    try:
        check_drain_timeout(config.server.drain_timeout_s, "server.drain_timeout_s")
    except ConfigError as exc:
        yield str(exc)


# A cost has the places of its price plus 6 (per million tokens): at most 24, so its exact text fits the usage
# row's 64 characters, and cost x a contract's rate (18 places) the ledger's 60-digit context. A price of
# 1.2e-41 made a cost of 66 characters, which PostgreSQL refused: every usage batch with it failed.
PRICE_PLACES = 18


def _price_places(where: str, price: Price | TierPrice | None) -> Iterator[str]:
    if price is None:
        return
    for field in ("input", "output", "cached_input"):
        value = getattr(price, field)
        if value is not None and places(Decimal(str(value))) > PRICE_PLACES:
            yield (
                f"{where}.{field}: {value} has more than {PRICE_PLACES} decimal places (a price is per million "
                "tokens: write it with fewer)"
            )
    for tier, tier_price in (getattr(price, "tiers", None) or {}).items():
        yield from _price_places(f"{where}.tiers.{tier}", tier_price)


def _zone_problems(
    where: str, declared: str | None, kind: ProviderKind, region: str | None, model: str
) -> Iterator[str]:
    """A data zone the path itself fixes (kind.data_zone) wins; a declared one that contradicts it
    would let residency policy send data where the tenant forbids it, so it is refused."""
    try:
        fixed = kind.zone(region, model)
    except ValueError as exc:
        yield f"{where}.model: {exc}" if model else f"{where}: {exc}"
        return
    if fixed and declared and declared.casefold() != fixed.casefold():
        what = f"model '{model}' in region '{region}'" if model else f"region '{region}'"
        field = where if where.endswith(".data_zone") else f"{where}.data_zone"
        yield f"{field}: '{declared}' contradicts {kind.title}'s data zone for {what}, which is '{fixed}'"


def _stored_key_problems(config: Config, name: str, prov: Provider, methods: list[str]) -> Iterator[str]:
    """`auth.api_key_from: store`: an API key set through the admin API, sealed in the database."""
    where = f"providers.{name}.auth.api_key_from"
    kind = KIND_BY_NAME[prov.kind]
    if "api_key_env" not in kind.auth_methods:
        kinds = [k.name for k in KINDS if "api_key_env" in k.auth_methods]
        yield (f"{where}: store keeps an API key; kind '{prov.kind}' takes none (only kind {' or '.join(kinds)})")
    if methods:
        yield (f"{where}: store takes the API key from the admin API; remove auth.{methods[0]}")
    if not (config.storage.url or config.storage.url_env):
        yield (f"{where}: store keeps the key sealed in the database; set storage.url")


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
