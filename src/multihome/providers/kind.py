"""`ProviderKind`: everything the rest of the gateway may know about one upstream API, as data.

Each `providers/<kind>/__init__.py` declares one (two for `gemini/`, which speaks both the Gemini
API and Vertex AI) and `registry.py` lists them. Config validation and telemetry read these fields
instead of keeping their own per-kind lists, and tests hold the simulators' table and the
conformance matrix to the registry (docs/adding-a-provider.md).

Pure data with no project imports: `config` imports the registry while it loads (the one import
of providers the layer contract in pyproject.toml lets it make), and the adapter behind each kind
is imported only when a config uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class ProviderFields(Protocol):
    """The parts of a config's provider entry a descriptor reads (config.Provider has them)."""

    @property
    def endpoint(self) -> str | None: ...

    @property
    def region(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ProviderKind:
    name: str  # the `kind:` value in a config's `providers:` entry
    title: str  # the upstream API as people name it (docs, messages)
    telemetry_name: str  # OpenTelemetry GenAI `gen_ai.provider.name`
    auth_methods: tuple[str, ...]  # the `auth:` fields (config.ProviderAuth) this kind accepts
    adapter: str  # module with `build(name, provider) -> Adapter`; imported on first use
    requires: tuple[str, ...] = ()  # provider fields a config must set besides `endpoint`
    # The public endpoint when the config sets none, from the provider's region (None: the
    # config must set `endpoint`).
    default_endpoint: Callable[[str | None], str] | None = None
    # The data zone a deployment of `model` on a provider in `region` is processed in, when the
    # cloud fixes it (a Vertex multi-region, a Bedrock cross-region inference profile); None when
    # unknown. Raises ValueError, with a sentence for the config error, for a combination the cloud
    # refuses (a `us.` inference profile called from an EU region). Residency policy reads the
    # result (docs/policy.md), so a deployment can never claim a zone its path leaves.
    data_zone: Callable[[str | None, str], str | None] | None = None
    # Whether the upstream API takes OpenAI's `service_tier`. False: the translation drops it (reported in
    # x-multihome-dropped-params), so every call runs at the provider's standard tier; the answer reports
    # `default`, and it is charged at the deployment's own price (docs/metering.md "Service tiers").
    service_tier: bool = True

    def zone(self, region: str | None, model: str) -> str | None:
        """`data_zone(region, model)`, or None for a kind that fixes no zone."""
        return self.data_zone(region, model) if self.data_zone is not None else None

    def endpoint(self, provider: ProviderFields) -> str:
        """The base URL the adapter calls: the configured one, else the derived public one.

        A loaded config always has one (config/load.py requires `endpoint` when there is no
        default); the ValueError is for a provider built by hand without it."""
        if provider.endpoint:
            return provider.endpoint
        if self.default_endpoint is None:
            raise ValueError(f"a provider of kind {self.name!r} needs an endpoint")
        return self.default_endpoint(provider.region)


def zone_by_prefix(name: str | None, table: tuple[tuple[str, str], ...]) -> str | None:
    """The zone of the first `(prefix, zone)` in `table` that `name` (a region, a model id) starts with."""
    if name:
        for prefix, zone in table:
            if name.startswith(prefix):
                return zone
    return None
