"""Deployments and model groups as runtime objects, built once from the validated config."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp

from ..config import Config, ModelGroup, Price
from ..providers.base import Adapter
from ..providers.registry import build_adapter
from ..providers.transport import Transport


@dataclass(slots=True)
class DeploymentRuntime:
    name: str
    provider: str
    adapter: Adapter
    upstream_model: str
    capabilities: frozenset[str]
    region: str | None
    data_zone: str | None
    context_window: int | None = None
    max_output_tokens: int | None = None
    price: Price | None = None
    commitment: str | None = None
    session: aiohttp.ClientSession | None = None
    # Whether a Responses API call is sent natively when the adapter can (config `responses_api`).
    responses_native: bool = True


@dataclass(slots=True)
class GroupRuntime:
    name: str
    deployments: list[DeploymentRuntime]
    policy: ModelGroup
    stream_timeout: aiohttp.ClientTimeout = field(init=False)
    unary_timeout: aiohttp.ClientTimeout = field(init=False)
    strategy: str = field(init=False)
    position: dict[str, int] = field(init=False)  # deployment -> index in config order
    needs_size: bool = field(init=False)  # whether any deployment has a window or output limit to check

    def __post_init__(self) -> None:
        self.strategy = self.policy.strategy
        self.position = {d.name: i for i, d in enumerate(self.deployments)}
        self.needs_size = self.policy.strategy == "lowest-cost" or any(
            d.context_window or d.max_output_tokens for d in self.deployments
        )
        t = self.policy.timeouts
        # sock_read bounds the wait for the first byte and, for streams, every later gap.
        self.unary_timeout = aiohttp.ClientTimeout(total=t.total_s, sock_connect=t.connect_s, sock_read=t.first_byte_s)
        self.stream_timeout = aiohttp.ClientTimeout(total=t.total_s, sock_connect=t.connect_s, sock_read=t.first_byte_s)


class Catalog:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.adapters: dict[str, Adapter] = {name: build_adapter(name, prov) for name, prov in config.providers.items()}
        self.deployments = {
            name: DeploymentRuntime(
                name=name,
                provider=dep.provider,
                adapter=self.adapters[dep.provider],
                upstream_model=dep.model,
                capabilities=frozenset(dep.capabilities),
                region=config.providers[dep.provider].region,
                data_zone=dep.data_zone or config.providers[dep.provider].data_zone,
                context_window=dep.context_window,
                max_output_tokens=dep.max_output_tokens,
                price=dep.price,
                commitment=dep.commitment,
                responses_native=dep.responses_api == "native",
            )
            for name, dep in config.deployments.items()
        }
        self.groups = {
            name: GroupRuntime(name, [self.deployments[d] for d in group.deployments], group)
            for name, group in config.model_groups.items()
        }
        self._transport = Transport()
        self._replaced: list[Adapter] = []  # adapters a new credential replaced: calls in flight may still use them

    def stored_key_providers(self) -> list[str]:
        """Providers whose API key comes from the admin API's sealed store (`auth.api_key_from: store`)."""
        return [name for name, prov in self.config.providers.items() if prov.auth.api_key_from == "store"]

    def set_api_key(self, provider: str, key: str | None) -> None:
        """Use `key` (None: none) for `provider` from the next call on: a new adapter replaces the old one
        in every deployment of it (a reference swap; calls already under way finish with the old one)."""
        adapter = build_adapter(provider, self.config.providers[provider], key)
        self._replaced.append(self.adapters[provider])
        self.adapters[provider] = adapter
        for dep in self.deployments.values():
            if dep.provider == provider:
                dep.adapter = adapter

    async def start(self) -> None:
        sessions = {
            name: self._transport.open(name, prov.max_connections) for name, prov in self.config.providers.items()
        }
        for dep in self.deployments.values():
            dep.session = sessions[dep.provider]

    async def close(self) -> None:
        await self._transport.close()
        for adapter in [*self.adapters.values(), *self._replaced]:
            await adapter.close()
