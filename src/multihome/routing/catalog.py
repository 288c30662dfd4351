"""Deployments and model groups as runtime objects, built once from the validated config."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Config, ModelGroup, Price
from ..providers.base import Adapter
from ..providers.registry import BY_NAME, build_adapter
from ..providers.transport import ProviderPool, Timeouts, Transport, Upstream
from ..schema import header_text, tiers


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
    session: ProviderPool | None = None  # its provider's connection pool, once started
    # Whether a Responses API call is sent natively when the adapter can (config `responses_api`).
    responses_native: bool = True
    # The name as the `x-multihome-deployment` header's value (api/render.py): made once, not per call.
    name_header: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.name_header = header_text.text(self.name).encode()


@dataclass(slots=True)
class GroupRuntime:
    name: str
    deployments: list[DeploymentRuntime]
    policy: ModelGroup
    timeouts: Timeouts = field(init=False)
    # deployment -> the client of its provider's pool with this group's timeouts, and the pool's gate
    # (max_connections), bound once started
    clients: dict[str, Upstream] = field(init=False)
    strategy: str = field(init=False)
    position: dict[str, int] = field(init=False)  # deployment -> index in config order
    # The deployments of its fallback groups (one level, as routing/router.py walks them), not its own: a call
    # may be served by one, so admission reserves at their prices too (metering/limiter.py `also`).
    fallback_deployments: tuple[DeploymentRuntime, ...] = field(init=False, default=())
    # The most upstream answers one call may be billed for (`billed_answers`): admission reserves that many.
    answers: int = field(init=False, default=1)
    needs_size: bool = field(init=False)  # whether any deployment has a window or output limit to check

    def __post_init__(self) -> None:
        self.strategy = self.policy.strategy
        self.position = {d.name: i for i, d in enumerate(self.deployments)}
        self.needs_size = self.policy.strategy == "lowest-cost" or any(
            d.context_window or d.max_output_tokens for d in self.deployments
        )
        t = self.policy.timeouts
        # The read timeout bounds the wait for the first byte and every later gap (streams' too).
        self.timeouts = (t.connect_s, t.first_byte_s, t.total_s)
        self.clients = {}

    def can(self, capability: str) -> bool:
        """Whether a deployment of the group has `capability` (`chat`: a Messages or chat call can be served)."""
        return any(capability in d.capabilities for d in self.deployments)

    def bind(self) -> None:
        """Take each deployment's client from its provider's pool (after the catalog bound the pools)."""
        self.clients = {d.name: d.session.upstream(self.timeouts) for d in self.deployments if d.session is not None}


@dataclass(frozen=True, slots=True)
class Staged:
    """A config a reload will serve, with the adapters built for it (Catalog.stage, then Catalog.swap)."""

    config: Config
    adapters: dict[str, Adapter]


class Catalog:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.adapters: dict[str, Adapter] = {name: build_adapter(name, prov) for name, prov in config.providers.items()}
        self.deployments, self.groups = _runtime(config, self.adapters)
        self._transport = Transport()
        self._replaced: list[Adapter] = []  # adapters a new credential replaced: calls in flight may still use them
        self._sessions: dict[str, ProviderPool] = {}  # provider -> its connection pool, once started
        self._retired: list[ProviderPool] = []  # pools a reload replaced: calls in flight may still use them

    def reload(self, config: Config) -> None:
        """Serve `config`'s providers, deployments and model groups from the next call on (`stage`, then `swap`)."""
        self.swap(self.stage(config))

    def stage(self, config: Config) -> Staged:
        """The adapters `config` needs, built before anything changes (building one may fail: then nothing
        did). A provider whose settings did not change keeps its adapter."""
        adapters = {
            name: self.adapters[name]
            if name in self.adapters and self.config.providers.get(name) == prov
            else build_adapter(name, prov)
            for name, prov in config.providers.items()
        }
        return Staged(config, adapters)

    def swap(self, staged: Staged) -> None:
        """Serve what `stage` built from the next call on, in one step with no await: calls under way keep
        the runtime objects they resolved, and so finish on the old config. An unchanged provider keeps its
        connection pool; what the swap replaced is closed with the catalog (docs/serving.md "Reloading the
        config")."""
        config, adapters = staged.config, staged.adapters
        sessions: dict[str, ProviderPool] = {}
        for name, prov in config.providers.items():
            if adapters[name] is self.adapters.get(name):
                if name in self._sessions:
                    sessions[name] = self._sessions[name]
                continue
            if name in self.adapters:
                self._replaced.append(self.adapters[name])
            if self._sessions:  # started: the new provider needs its own pool now
                if name in self._sessions:
                    self._retired.append(self._sessions[name])
                sessions[name] = self._transport.open(name, prov.max_connections)
        for name in set(self.adapters) - set(adapters):
            self._replaced.append(self.adapters[name])
            if name in self._sessions:
                self._retired.append(self._sessions[name])
        deployments, groups = _runtime(config, adapters)
        for dep in deployments.values():
            dep.session = sessions.get(dep.provider)
        for group in groups.values():
            group.bind()
        self.config, self.adapters, self._sessions = config, adapters, sessions
        self.deployments, self.groups = deployments, groups

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
        self._sessions = {
            name: self._transport.open(name, prov.max_connections) for name, prov in self.config.providers.items()
        }
        for dep in self.deployments.values():
            dep.session = self._sessions[dep.provider]
        for group in self.groups.values():
            group.bind()

    async def close(self) -> None:
        await self._transport.close()
        for session in self._retired:
            await session.close()
        for adapter in [*self.adapters.values(), *self._replaced]:
            await adapter.close()


def deployment_zone(config: Config, provider: str, own: str | None, model: str) -> str | None:
    """Where a deployment's calls are processed: its own `data_zone`, else the zone its path fixes
    (a Vertex location, a Bedrock inference profile: config/load.py refuses an own zone that
    contradicts it), else its provider's `data_zone`."""
    prov = config.providers[provider]
    return own or BY_NAME[prov.kind].zone(prov.region, model) or prov.data_zone


def tier_capabilities(price: Price | None, takes_tier: bool = True) -> frozenset[str]:
    """The service tiers a deployment serves besides auto and default: those its price declares, or
    every one when it has no price (it charges nothing for any tier: schema/tiers.py). One whose upstream
    takes no service_tier (`takes_tier` False: its kind's translation drops it) also serves the tiers
    OpenAI serves at the default when it cannot give them (tiers.SERVED_AT_DEFAULT), at its own price."""
    if price is None:
        return _EVERY_TIER
    own = frozenset(tiers.need(t) for t in price.tiers or ())
    return own if takes_tier else own | _AT_DEFAULT


_EVERY_TIER = frozenset(tiers.need(t) for t in tiers.PRICED_TIERS)
_AT_DEFAULT = frozenset(tiers.need(t) for t in tiers.SERVED_AT_DEFAULT)


def _runtime(
    config: Config, adapters: dict[str, Adapter]
) -> tuple[dict[str, DeploymentRuntime], dict[str, GroupRuntime]]:
    """The deployments and model groups of `config`, served through `adapters` (provider name -> adapter)."""
    deployments = {
        name: DeploymentRuntime(
            name=name,
            provider=dep.provider,
            adapter=adapters[dep.provider],
            upstream_model=dep.model,
            capabilities=frozenset(dep.capabilities)
            | tier_capabilities(dep.price, BY_NAME[config.providers[dep.provider].kind].service_tier),
            region=config.providers[dep.provider].region,
            data_zone=deployment_zone(config, dep.provider, dep.data_zone, dep.model),
            context_window=dep.context_window,
            max_output_tokens=dep.max_output_tokens,
            price=dep.price,
            commitment=dep.commitment,
            responses_native=dep.responses_api == "native",
        )
        for name, dep in config.deployments.items()
    }
    groups = {
        name: GroupRuntime(name, [deployments[d] for d in group.deployments], group)
        for name, group in config.model_groups.items()
    }
    for group in groups.values():
        group.fallback_deployments = tuple(
            {
                d.name: d
                for name in group.policy.fallback_groups
                if name in groups
                for d in groups[name].deployments
                if d.name not in group.position
            }.values()
        )
        group.answers = billed_answers(group, [groups[n] for n in group.policy.fallback_groups if n in groups])
    return deployments, groups


def billed_answers(group: GroupRuntime, fallbacks: list[GroupRuntime]) -> int:
    """The most answers an upstream may bill one call of `group` for (routing/attempts.py): the one served,
    each refusal a group that fails over on `refusal` passes over (at most one per deployment but its last:
    a last refusal is the answer), one hedge's loser that completed (only the winning pair has one), and the
    attempts in flight when a walk's time budget cut it (their prompts: billed, the request was sent) if a
    fallback group walks after it: one, both of a hedge. Never more than the deployments of the chain's walks,
    each called at most once per walk for a billable answer (a retry follows only an unbilled failure; a cut
    ends the walk). 1 for a group that neither hedges nor fails over on refusals."""
    chain = [group, *fallbacks]
    extra = sum(len(g.deployments) - 1 for g in chain if "refusal" in g.policy.fail_over_on)
    if any(g.policy.hedge_after_ms is not None for g in chain):
        extra += 1
    for g in chain[:-1]:  # the last group's cut is the call's end: nothing served after it
        if g.policy.timeouts.budget_s is not None:
            extra += 2 if g.policy.hedge_after_ms is not None and len(g.deployments) > 1 else 1
    return min(1 + extra, sum(len(g.deployments) for g in chain))
