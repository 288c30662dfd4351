"""CallRecord -> GenAI semantic-convention span name and attributes."""

from __future__ import annotations

import pytest

from builders import config, deployment, embedding, group, open_door, provider, typed
from multihome.accounting.record import AttemptRecord, CallRecord, Usage
from multihome.observability.genai import GenAIMapper, error_type_of
from multihome.providers.registry import BY_NAME

CONFIG = config(
    server=open_door(),
    providers={
        "az": provider("azure", "https://contoso.openai.azure.com", region="eastus", data_zone="US"),
        "oa": provider("openai", "http://10.0.0.5:8000/v1"),
        "br": provider("bedrock", region="eu-central-1"),
        "an": provider("anthropic"),
        "ge": provider("gemini"),
        "vx": provider("vertex", region="europe-west4", project="p1"),
    },
    deployments={
        "gpt@az": deployment("az", "gpt-4o-prod"),
        "gpt@oa": deployment("oa", "gpt-4o"),
        "claude@br": deployment("br", "anthropic.claude-3-5-sonnet"),
        "claude@an": deployment("an", "claude-sonnet-4"),
        "gem@ge": deployment("ge", "gemini-2.0-flash"),
        "gem@vx": deployment("vx", "gemini-2.0-flash-001"),
        "emb@az": embedding("az", "embed-prod"),
    },
    model_groups={
        "gpt-4o": group("gpt@az", "gpt@oa"),
        "claude": group("claude@br", "claude@an"),
        "gemini": group("gem@ge", "gem@vx"),
        "embed": group("emb@az"),
    },
)


@pytest.fixture(scope="module")
def mapper() -> GenAIMapper:
    return GenAIMapper.from_config(typed(CONFIG), BY_NAME)


def call(**kw) -> CallRecord:
    base = dict(
        request_id="req_1",
        started_at=1000.0,
        finished_at=1000.5,
        endpoint="chat",
        tenant="acme",
        subject="alice@example.com",
        principal_source="oidc",
        model_group="gpt-4o",
        status=200,
        outcome="ok",
    )
    return CallRecord(**{**base, **kw})


@pytest.mark.parametrize(
    "deployment, provider, address, port",
    [
        ("gpt@az", "azure.ai.openai", "contoso.openai.azure.com", 443),
        ("gpt@oa", "openai", "10.0.0.5", 8000),
        ("claude@br", "aws.bedrock", "bedrock-runtime.eu-central-1.amazonaws.com", 443),
        ("claude@an", "anthropic", "api.anthropic.com", 443),
        ("gem@ge", "gcp.gemini", "generativelanguage.googleapis.com", 443),
        ("gem@vx", "gcp.vertex_ai", "europe-west4-aiplatform.googleapis.com", 443),
    ],
)
def test_provider_names_and_server_address_per_kind(mapper, deployment, provider, address, port):
    _, attrs, metric, _ = mapper.describe(call(deployment=deployment))
    assert attrs["gen_ai.provider.name"] == provider
    assert (attrs["server.address"], attrs["server.port"]) == (address, port)
    assert metric["gen_ai.provider.name"] == provider


def test_served_chat_call(mapper):
    record = call(
        deployment="gpt@oa",
        provider="oa",
        provider_kind="openai",
        region="eastus",
        data_zone="US",
        team="ml",
        key_id="key_abc",
        stream=True,
        first_byte_ms=12.5,
        latency_ms=500.0,
        attempts=(AttemptRecord("gpt@az", "http_503", 3.0), AttemptRecord("gpt@oa", "ok", 9.0)),
        usage=Usage(prompt_tokens=11, completion_tokens=7, cached_tokens=4),
    )
    name, attrs, metric, error = mapper.describe(record)
    assert name == "chat gpt-4o" and error is None
    assert attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.provider.name": "openai",
        "gen_ai.response.model": "gpt-4o",
        "server.address": "10.0.0.5",
        "server.port": 8000,
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 4,
        "multihome.usage.estimated": False,
        "multihome.request_id": "req_1",
        "multihome.tenant": "acme",
        "multihome.team": "ml",
        "multihome.key_id": "key_abc",
        "multihome.deployment": "gpt@oa",
        "multihome.region": "eastus",
        "multihome.data_zone": "US",
        "multihome.outcome": "ok",
        "multihome.status": 200,
        "multihome.stream": True,
        "multihome.attempts": 2,
        "multihome.attempts.deployments": ["gpt@az", "gpt@oa"],
        "multihome.attempts.outcomes": ["http_503", "ok"],
        "multihome.first_byte_ms": 12.5,
    }
    # Metric dimensions: the conventions' own, nothing per tenant, key or request.
    assert set(metric) == {
        "gen_ai.operation.name",
        "gen_ai.request.model",
        "gen_ai.provider.name",
        "gen_ai.response.model",
        "server.address",
        "server.port",
    }
    # The subject may be a person's e-mail: never exported.
    assert "alice@example.com" not in repr(attrs)


def test_declined_call_names_the_last_provider_tried_and_the_error(mapper):
    record = call(
        status=503,
        outcome="declined",
        error_code="all_deployments_failed",
        attempts=(AttemptRecord("gpt@az", "http_503", 3.0), AttemptRecord("gpt@oa", "http_503", 2.0)),
    )
    name, attrs, metric, error = mapper.describe(record)
    assert error == "all_deployments_failed" == attrs["error.type"] == metric["error.type"]
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["server.port"] == 8000
    assert "gen_ai.response.model" not in attrs and "multihome.deployment" not in attrs
    assert not any(k.startswith("gen_ai.usage") for k in attrs)
    assert attrs["multihome.attempts"] == 2


def test_denied_call_without_attempts_uses_the_primary(mapper):
    record = call(model_group="claude", status=429, outcome="denied", error_code="budget_exceeded")
    _, attrs, _, error = mapper.describe(record)
    assert error == "budget_exceeded" and attrs["gen_ai.provider.name"] == "aws.bedrock"
    assert attrs["multihome.attempts"] == 0 and "multihome.attempts.deployments" not in attrs


def test_operations_and_estimated_usage(mapper):
    name, attrs, _, _ = mapper.describe(
        call(
            endpoint="embeddings",
            model_group="embed",
            deployment="emb@az",
            usage=Usage(prompt_tokens=5, estimated=True),
        )
    )
    assert name == "embeddings embed" and attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.response.model"] == "embed-prod" and attrs["multihome.usage.estimated"] is True
    name, attrs, _, _ = mapper.describe(call(endpoint="messages", model_group="claude", deployment="claude@an"))
    assert name == "chat claude" and attrs["gen_ai.provider.name"] == "anthropic"


@pytest.mark.parametrize(
    "outcome, status, code, expected",
    [
        ("ok", 200, None, None),
        ("client_error", 400, None, "400"),
        ("client_error", 400, "invalid_request", "invalid_request"),
        ("stream_error", 200, None, "stream_error"),
        ("cancelled", 200, None, "cancelled"),
        ("denied", 403, "policy_denied", "policy_denied"),
        # An upstream's code passed on as it is: a metric attribute only when it looks like a code.
        ("client_error", 400, "x" * 65, "other"),
        ("client_error", 400, "the client's text", "other"),
    ],
)
def test_error_type(outcome, status, code, expected):
    assert error_type_of(call(outcome=outcome, status=status, error_code=code)) == expected
