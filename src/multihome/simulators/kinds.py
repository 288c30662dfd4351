"""Which app speaks each provider kind's wire format: the simulators' own table of kinds.

The simulators use none of the gateway (an import contract in pyproject.toml), so this table is
theirs rather than read from `providers.registry`; tests/providers/test_registry.py fails when
the two disagree, so a provider kind never lacks a simulator. Apps are "module:Class" names,
imported only when a simulator of that kind starts.
"""

from __future__ import annotations

APPS: dict[str, str] = {
    "openai": "openai.api:OpenAIApp",
    "azure": "azure.api:AzureApp",
    "bedrock": "bedrock.api:BedrockApp",
    "anthropic": "anthropic.api:AnthropicApp",
    "gemini": "gemini.api:GeminiApp",
    "vertex": "gemini.api:GeminiApp",  # the same Google API; the app tells the two apart by kind
    "foundry_anthropic": "anthropic.foundry:FoundryAnthropicApp",  # Anthropic's API under a Foundry resource
    "azure_inference": "azure.inference:AzureInferenceApp",  # Foundry's model catalogue, OpenAI-shaped
    "vertex_anthropic": "anthropic.vertex:VertexAnthropicApp",  # Claude on Vertex AI, with its token endpoint
    "bedrock_anthropic": "anthropic.bedrock:BedrockAnthropicApp",  # Bedrock itself, InvokeModel with Claude's body
    "bedrock_openai": "bedrock.openai_compat:BedrockOpenAIApp",  # Bedrock's OpenAI-compatible chat endpoint
}
KINDS: tuple[str, ...] = tuple(APPS)
