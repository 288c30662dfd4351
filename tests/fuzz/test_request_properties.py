"""Property tests of every client-input parser and translator: hostile request bodies through the
OpenAI and Anthropic front doors' decoding, the Anthropic -> canonical translation, the routing
extension, the size estimates, and every provider adapter's request builder (OpenAI, Azure,
Anthropic, Bedrock Converse and InvokeModel, Gemini, Vertex). Each stage succeeds or refuses
with a 4xx ApiError (harness.py); nothing else may escape.
"""

from __future__ import annotations

import base64

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from multihome.api.admin import bodies as admin_bodies
from multihome.api.anthropic.translate import to_canonical
from multihome.api.pipeline import narrowing
from multihome.providers.anthropic.adapter import AnthropicAdapter
from multihome.providers.aws import BearerSigner, Runtime
from multihome.providers.azure.adapter import AzureAdapter
from multihome.providers.bedrock.adapter import BedrockAdapter
from multihome.providers.gemini.adapter import GeminiAdapter
from multihome.providers.openai.adapter import OpenAIAdapter
from multihome.schema import estimate
from multihome.schema.anthropic import parse_messages
from multihome.schema.chat import parse_chat
from multihome.schema.decoding import decode_error
from multihome.schema.embeddings import parse_embeddings

from .harness import FUZZ, client_stage
from .strategies import LONG_VALUE, encode, fragment_or_value, json_value, mutated

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


class _Tokens:
    async def bearer(self) -> str:
        return "vertex-token"


def _vertex() -> GeminiAdapter:
    adapter = GeminiAdapter("vertex", "http://vertex.invalid", tokens=_Tokens())
    adapter.resource = "v1/projects/p/locations/us-central1"
    return adapter


# (adapter, upstream model for chat, upstream models for embeddings)
ADAPTERS = [
    (OpenAIAdapter("http://openai.invalid/v1", "k"), "gpt-4o", ["text-embedding-3-small"]),
    (AzureAdapter("http://azure.invalid", "2024-10-21", "k", None), "dep", ["embed-dep"]),
    (AzureAdapter("http://azure.invalid", "v1", "k", None), "dep", []),
    (AnthropicAdapter("http://anthropic.invalid", "k", "2023-06-01"), "claude-x", ["claude-x"]),
    (
        BedrockAdapter(Runtime("br", "http://bedrock.invalid", BearerSigner("k"))),
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        ["amazon.titan-embed-text-v2:0", "cohere.embed-english-v3", "meta.llama3"],
    ),
    (GeminiAdapter("gemini", "http://gemini.invalid", api_key="k"), "gemini-2.5-flash", ["text-embedding-004"]),
    (_vertex(), "gemini-2.5-pro", ["text-embedding-005"]),
]


class _Dep:
    def __init__(self, name: str) -> None:
        self.name = name


class _Group:
    name = "g"
    deployments = [_Dep("a"), _Dep("b")]


CHAT = {
    "model": "g",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?", "cache_control": {"type": "ephemeral"}},
                {"type": "image_url", "image_url": {"url": PNG}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
    ],
    "tools": [TOOL],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
    "max_tokens": 50,
    "temperature": 0.5,
    "stop": ["END"],
    "seed": 7,
    "user": "u1",
    "multihome": {"route": {"deployments": ["a"]}},
}
CHAT_PATHS = [
    ("model",),
    ("messages",),
    ("messages", 0),
    ("messages", 0, "content"),
    ("messages", 1, "content"),
    ("messages", 1, "content", 0, "text"),
    ("messages", 1, "content", 0, "cache_control"),
    ("messages", 1, "content", 1, "image_url"),
    ("messages", 1, "content", 1, "image_url", "url"),
    ("messages", 1, "content", 2, "input_audio"),
    ("messages", 1, "content", 0, "type"),
    ("messages", 2, "tool_calls"),
    ("messages", 2, "tool_calls", 0, "function", "arguments"),
    ("messages", 2, "tool_calls", 0, "function", "name"),
    ("messages", 3, "content"),
    ("messages", 3, "tool_call_id"),
    ("messages", 1, "role"),
    ("tools",),
    ("tools", 0, "function", "parameters"),
    ("tools", 0, "type"),
    ("tool_choice",),
    ("tool_choice", "type"),
    ("response_format",),
    ("response_format", "json_schema", "schema"),
    ("max_tokens",),
    ("temperature",),
    ("stop",),
    ("seed",),
    ("n",),
    ("stream",),
    ("stream_options",),
    ("presence_penalty",),
    ("metadata",),
    ("user",),
    ("modalities",),
    ("logprobs",),
    ("multihome",),
    ("multihome", "route", "deployments"),
]
TOOL_CHOICES = st.sampled_from(
    [
        "auto",
        "none",
        "required",
        {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [TOOL]}},
        {"type": "allowed_tools", "allowed_tools": "x"},
        {"type": "allowed_tools", "allowed_tools": {"tools": ["x", 1]}},
        {"type": "allowed_tools", "allowed_tools": {"tools": [{"function": "x"}]}},
        {"type": "custom", "custom": {}},
    ]
)
MESSAGES = {
    "model": "g",
    "max_tokens": 64,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",", 1)[1]},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "3C"}]}],
        },
    ],
    "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    "stop_sequences": ["END"],
    "temperature": 0.5,
    "top_k": 5,
    "metadata": {"user_id": "u1"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
    "multihome": {"route": {"deployments": ["a"]}},
}
MESSAGES_PATHS = [
    ("model",),
    ("max_tokens",),
    ("system",),
    ("system", 0, "text"),
    ("messages",),
    ("messages", 0, "content"),
    ("messages", 0, "content", 0, "text"),
    ("messages", 0, "content", 1, "source"),
    ("messages", 0, "content", 1, "source", "data"),
    ("messages", 0, "content", 1, "source", "media_type"),
    ("messages", 0, "role"),
    ("messages", 1, "content", 1, "input"),
    ("messages", 1, "content", 1, "id"),
    ("messages", 1, "content", 1, "name"),
    ("messages", 2, "content", 0, "content"),
    ("messages", 2, "content", 0, "tool_use_id"),
    ("messages", 2, "content", 0, "is_error"),
    ("tools",),
    ("tools", 0, "input_schema"),
    ("tools", 0, "type"),
    ("tool_choice",),
    ("tool_choice", "type"),
    ("stop_sequences",),
    ("temperature",),
    ("top_k",),
    ("metadata",),
    ("thinking",),
    ("output_config",),
    ("output_config", "format", "schema"),
    ("stream",),
    ("multihome",),
    ("service_tier",),
]
EMBEDDINGS = {"model": "g", "input": ["alpha", "beta"], "encoding_format": "base64", "dimensions": 8, "user": "u1"}
EMBEDDINGS_PATHS = [
    ("model",),
    ("input",),
    ("input", 0),
    ("encoding_format",),
    ("dimensions",),
    ("user",),
    ("multihome",),
]


def _chat_through_everything(body: bytes, parsed) -> None:
    estimate.prompt_tokens(parsed.request)
    estimate.output_tokens(parsed.request)
    raw = dict(parsed.raw)
    client_stage("narrowing", narrowing, body, {"headers": []}, raw, _Group())
    for adapter, model, _ in ADAPTERS:
        client_stage(f"{adapter.kind}.chat_request", adapter.chat_request, body, parsed, model)


def serve_chat(body: bytes) -> None:
    parsed = client_stage("client-decode", parse_chat, body, body)
    if parsed is not None:
        _chat_through_everything(body, parsed)


def serve_messages(body: bytes) -> None:
    parsed = client_stage("client-decode", parse_messages, body, body)
    if parsed is None:
        return
    translated = client_stage("to_canonical", to_canonical, body, parsed)
    if translated is not None:
        _chat_through_everything(body, translated[0])


def serve_embeddings(body: bytes) -> None:
    parsed = client_stage("client-decode", parse_embeddings, body, body)
    if parsed is None:
        return
    estimate.embedding_tokens(parsed.request)
    for adapter, _, models in ADAPTERS:
        for model in models:
            client_stage(f"{adapter.kind}.embeddings_request", adapter.embeddings_request, body, parsed, model)


@FUZZ
@given(mutated(CHAT, CHAT_PATHS))
def test_chat_requests_are_served_or_refused_with_a_4xx(body):
    serve_chat(body)


@FUZZ
@given(st.builds(lambda choice: encode({**CHAT, "tool_choice": choice}), st.one_of(TOOL_CHOICES, json_value)))
def test_every_tool_choice_shape_is_served_or_refused_with_a_4xx(body):
    serve_chat(body)


@FUZZ
@given(mutated(MESSAGES, MESSAGES_PATHS))
def test_anthropic_messages_are_served_or_refused_with_a_4xx(body):
    serve_messages(body)


@FUZZ
@given(mutated(EMBEDDINGS, EMBEDDINGS_PATHS))
def test_embeddings_requests_are_served_or_refused_with_a_4xx(body):
    serve_embeddings(body)


@FUZZ
@given(st.one_of(fragment_or_value(), st.binary(max_size=200)))
def test_any_body_at_all_is_served_or_refused_with_a_4xx(body):
    serve_chat(body)
    serve_messages(body)
    serve_embeddings(body)


ADMIN_BODIES = sorted(
    {
        t
        for t in vars(admin_bodies).values()
        if isinstance(t, type) and issubclass(t, admin_bodies._Body) and t is not admin_bodies._Body
    },
    key=lambda t: t.__name__,
)


def _admin_decode(body: bytes, kind: type):
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:  # as api/admin/dispatch.py does
        raise decode_error(exc) from None


@FUZZ
@given(
    st.sampled_from(ADMIN_BODIES),
    st.dictionaries(
        st.sampled_from(
            [
                "name",
                "metadata",
                "roles",
                "expires_at",
                "expires_in_days",
                "scope",
                "scope_id",
                "amount",
                "rules",
                "kind",
                "issuer",
                "jti",
                "subject",
                "not_before",
                "model_group",
                "starts_on",
                "ends_on",
                "tenant_id",
                "model",
                "on",
                "description",
                "mode",
                "period",
                "currency",
            ]
        ),
        fragment_or_value(),
        max_size=5,
    ),
)
def test_admin_bodies_decode_or_are_refused_with_a_4xx(kind, fields):
    body = b"{" + b",".join(encode(k) + b":" + v for k, v in fields.items()) + b"}"
    client_stage("client-decode", _admin_decode, body, body, kind)


_CALLED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
}


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{**TOOL, "type": LONG_VALUE}]},
        {"tools": [TOOL], "tool_choice": {"type": LONG_VALUE, "function": {"name": "get_weather"}}},
        {"messages": [{"role": "user", "content": [{"type": LONG_VALUE, "text": "x"}]}]},
        {"messages": [{"role": LONG_VALUE, "content": "x"}]},
        {
            "tools": [TOOL],
            "messages": [
                {"role": "user", "content": "x"},
                _CALLED,
                {"role": "tool", "tool_call_id": LONG_VALUE, "content": "sunny"},
            ],
        },
    ],
)
def test_a_long_type_role_or_id_is_refused_by_its_start_by_every_translator(extra):
    """Were repeated whole by the Gemini, Bedrock and Anthropic request builders (`tools[0].type 'ZqZq…'`
    5 KB long, in the message and in `param`), and by the chat door (a role)."""
    serve_chat(encode({**CHAT, **extra}))


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{"name": "t", "input_schema": {"type": "object"}}], "tool_choice": {"type": LONG_VALUE}},
        {
            "tools": [{"name": "t", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": LONG_VALUE},
        },
        {"tools": [{"type": LONG_VALUE, "name": "t"}]},
        {"messages": [{"role": "user", "content": [{"type": LONG_VALUE}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": LONG_VALUE}}]}]},
    ],
)
def test_a_long_type_or_name_is_refused_by_its_start_at_the_anthropic_door(extra):
    """Were repeated whole (`tool_choice.type: 'ZqZq…'`, 5 KB) by the Anthropic door's translation."""
    serve_messages(encode({**MESSAGES, **extra}))
