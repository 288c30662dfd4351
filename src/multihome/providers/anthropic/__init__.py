"""Anthropic's Messages API as an upstream for OpenAI chat calls, reached two ways: Anthropic's
own API (`anthropic` kind, an x-api-key) and Claude on Microsoft Foundry (`foundry_anthropic`
kind: the same Messages API under a Foundry resource's `/anthropic/`, with an Azure key or an Entra
ID token). One adapter serves both; only the URL and the auth differ.

`request.py` turns an OpenAI chat body into a Messages body, `response.py` a message into a
chat.completion, `stream.py` Messages SSE events into chunks; `adapter.py` holds the URL, headers
and error classification. (The opposite direction, Anthropic clients at the front door, is
`api/anthropic*`.)
"""

from __future__ import annotations

from ..kind import ProviderKind

DEFAULT_ENDPOINT = "https://api.anthropic.com"


def _public_endpoint(region: str | None) -> str:
    return DEFAULT_ENDPOINT


KIND = ProviderKind(
    name="anthropic",
    title="Anthropic",
    telemetry_name="anthropic",
    auth_methods=("api_key_env",),
    adapter="multihome.providers.anthropic.adapter",
    default_endpoint=_public_endpoint,
)
FOUNDRY = ProviderKind(
    name="foundry_anthropic",
    title="Claude on Microsoft Foundry",
    # Foundry belongs to the Azure AI family of the GenAI conventions' well-known values; Claude's
    # wire format does not change which cloud served the call (Bedrock's Claude is aws.bedrock).
    telemetry_name="azure.ai.inference",
    auth_methods=("api_key_env", "entra"),
    adapter="multihome.providers.anthropic.adapter",
    # No default: the URL names the customer's Foundry resource, https://<resource>.services.ai.azure.com.
)
