"""CallRecord -> OpenTelemetry GenAI semantic-convention span name, attributes and error type.

Pure data mapping, no OpenTelemetry import: the exporter (`telemetry.py`) hands the result to
the SDK. Only what CallRecord holds can appear here, and CallRecord never holds content or a
secret; of the principal only the tenant, team and visible key id are exported (never the
subject, which may be a person's e-mail address).

Names follow the OpenTelemetry GenAI semantic conventions (gen-ai-spans, gen-ai-metrics):
`gen_ai.provider.name` (was `gen_ai.system`), `gen_ai.usage.input_tokens`/`output_tokens`,
`gen_ai.usage.cache_read.input_tokens`, `error.type`, `server.address`/`server.port`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..accounting.record import CallRecord


class ProviderKindInfo(Protocol):
    """What telemetry reads from a provider kind's descriptor (`providers.kind.ProviderKind`).

    The descriptors are handed in by the composition root (app.py passes
    `providers.registry.BY_NAME`) rather than imported. That was the simplest way to drop the
    import of `providers` (against DESIGN.md's one-way rule) without a second table of kinds:
    telemetry maps call records and never needs the adapters' package, only these two members.
    """

    @property
    def telemetry_name(self) -> str: ...  # the conventions' well-known gen_ai.provider.name

    def endpoint(self, provider: Any) -> str: ...  # the base URL the adapter calls


# An OpenTelemetry attribute value: a primitive or a list of one primitive type (what the SDK takes).
AttributeValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]
Attributes = dict[str, AttributeValue]

# The conventions' advisory bucket boundaries: seconds, and tokens (shared by OTLP and Prometheus).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

# CallRecord.endpoint -> gen_ai.operation.name (the Anthropic Messages and Responses front doors are chats).
OPERATION_NAMES = {
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "embeddings": "embeddings",
    "memory_embeddings": "embeddings",  # memory's own, made by the gateway (api/memory_embeddings.py)
}

# What a code may look like to be a metric's label or attribute value (the gateway's own and providers' codes:
# `rate_limit_exceeded`, `http_503`, `invalid_request_error`). An upstream's 4xx passes its code on to the
# client as it is, and a self-hosted upstream may put anything there, of any length, some of it the client's.
CODE_SHAPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
OTHER_CODE = "other"


def code_label(code: str) -> str:
    """`code` as a label value: itself when it looks like a code, else `other`."""
    return code if CODE_SHAPE.fullmatch(code) else OTHER_CODE


# Outcomes (CallRecord.outcome) that are not a success: the span gets status ERROR and error.type.
_FAILED = frozenset({"client_error", "declined", "denied", "cancelled", "stream_error", "gateway_error"})


@dataclass(frozen=True, slots=True)
class Upstream:
    """What the conventions want to know about a deployment, computed once from the config."""

    provider_name: str  # gen_ai.provider.name
    model: str  # the model the gateway asks this deployment for
    address: str | None  # server.address
    port: int | None  # server.port


def _address(url: str | None) -> tuple[str | None, int | None]:
    if not url:
        return None, None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None and parts.scheme in ("http", "https"):
        port = 443 if parts.scheme == "https" else 80
    return parts.hostname, port


class GenAIMapper:
    """Builds one span's name and attributes (and the metric attributes) from a CallRecord."""

    def __init__(
        self, upstreams: dict[str, Upstream], primaries: dict[str, str], provider_names: dict[str, str]
    ) -> None:
        self.upstreams = upstreams  # deployment name -> Upstream
        self.primaries = primaries  # model group -> its first deployment
        self.provider_names = provider_names  # provider kind -> gen_ai.provider.name

    @classmethod
    def from_config(cls, config: Any, kinds: Mapping[str, ProviderKindInfo]) -> GenAIMapper:
        """`kinds`: provider kind name -> its descriptor (`providers.registry.BY_NAME`)."""
        upstreams = {}
        for name, dep in config.deployments.items():
            provider = config.providers[dep.provider]
            kind = kinds[provider.kind]
            address, port = _address(kind.endpoint(provider))
            upstreams[name] = Upstream(kind.telemetry_name, dep.model, address, port)
        primaries = {name: group.deployments[0] for name, group in config.model_groups.items() if group.deployments}
        return cls(upstreams, primaries, {name: kind.telemetry_name for name, kind in kinds.items()})

    def _upstream(self, call: CallRecord) -> Upstream | None:
        """The deployment that served; else the last one tried; else the group's primary."""
        if call.deployment is not None:
            return self.upstreams.get(call.deployment)
        for attempt in reversed(call.attempts):
            up = self.upstreams.get(attempt.deployment)
            if up is not None:
                return up
        primary = self.primaries.get(call.model_group)
        return self.upstreams.get(primary) if primary else None

    def describe(self, call: CallRecord) -> tuple[str, Attributes, Attributes, str | None]:
        """(span name, span attributes, metric attributes, error.type or None for a success).

        The metric attributes are the conventions' metric dimensions only: bounded by the config
        (groups, deployments, error codes), never per tenant or per request."""
        operation = OPERATION_NAMES.get(call.endpoint, call.endpoint)
        name = f"{operation} {call.model_group}" if call.model_group else operation
        error_type = error_type_of(call)
        metric: Attributes = {"gen_ai.operation.name": operation, "gen_ai.request.model": call.model_group}
        up = self._upstream(call)
        if up is not None:
            metric["gen_ai.provider.name"] = up.provider_name
            if call.deployment is not None:
                metric["gen_ai.response.model"] = up.model
            if up.address:
                metric["server.address"] = up.address
                if up.port:
                    metric["server.port"] = up.port
        elif call.provider_kind:
            metric["gen_ai.provider.name"] = self.provider_names.get(call.provider_kind, call.provider_kind)
        if error_type is not None:
            metric["error.type"] = error_type
        attrs = dict(metric)
        usage = call.usage
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
            if usage.cached_tokens:
                attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
            attrs["multihome.usage.estimated"] = usage.estimated
        attrs["multihome.request_id"] = call.request_id
        attrs["multihome.tenant"] = call.tenant
        if call.team:
            attrs["multihome.team"] = call.team
        if call.key_id:
            attrs["multihome.key_id"] = call.key_id  # the visible id (key_...), never the key
        if call.deployment:
            attrs["multihome.deployment"] = call.deployment
        if call.region:
            attrs["multihome.region"] = call.region
        if call.data_zone:
            attrs["multihome.data_zone"] = call.data_zone
        attrs["multihome.outcome"] = call.outcome
        attrs["multihome.status"] = call.status
        attrs["multihome.stream"] = call.stream
        attrs["multihome.attempts"] = len(call.attempts)
        if len(call.attempts) > 1:  # retries or failover: which deployments, and what each said
            attrs["multihome.attempts.deployments"] = [a.deployment for a in call.attempts]
            attrs["multihome.attempts.outcomes"] = [a.outcome for a in call.attempts]
        if call.first_byte_ms is not None:
            attrs["multihome.first_byte_ms"] = call.first_byte_ms
        if call.policy_code:
            attrs["multihome.policy_code"] = call.policy_code
        return name, attrs, metric, error_type


def error_type_of(call: CallRecord) -> str | None:
    """A low-cardinality error class: the error code the client got, else the outcome or status."""
    if call.outcome not in _FAILED:
        return None
    if call.error_code:
        return code_label(call.error_code)
    if call.outcome == "client_error":
        return str(call.status)
    return call.outcome
