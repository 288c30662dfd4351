"""Anthropic's Messages API as an upstream for OpenAI chat calls, reached four ways: Anthropic's
own API (`anthropic` kind, an x-api-key), Claude on Microsoft Foundry (`foundry_anthropic` kind:
the same Messages API under a Foundry resource's `/anthropic/`, with an Azure key or an Entra ID
token), Claude on Vertex AI (`vertex_anthropic` kind: the Messages body at a Vertex model's
`:rawPredict` / `:streamRawPredict`, with `anthropic_version` in the body instead of `model`, and a
Google OAuth token) and Claude on Amazon Bedrock's InvokeModel (`bedrock_anthropic` kind, `bedrock.py`:
the Messages body with Bedrock's `anthropic_version`, SigV4, the stream in AWS event-stream frames).
One translation serves all four; the URL, the auth, the stream framing and two body fields differ.

`request.py` turns an OpenAI chat body into a Messages body, `response.py` a message into a
chat.completion, `stream.py` Messages SSE events into chunks; `adapter.py` holds the URL, headers
and error classification. (The opposite direction, Anthropic clients at the front door, is
`api/anthropic*`.)
"""

from __future__ import annotations

from .. import bedrock
from ..kind import ProviderKind, zone_by_prefix

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
    service_tier=False,  # the translation drops it: the standard tier
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
    service_tier=False,  # the translation drops it: the standard tier
)

# Vertex AI's endpoints for Claude: the global endpoint, the US and EU multi-regions (Google's
# regional-endpoint hosts, as the anthropic SDK's AnthropicVertex builds them) and single regions.
_VERTEX_HOSTS = {
    "global": "https://aiplatform.googleapis.com",
    "us": "https://aiplatform.us.rep.googleapis.com",
    "eu": "https://aiplatform.eu.rep.googleapis.com",
}
# Where a Vertex location keeps processing: the global endpoint may serve from any region; a
# multi-region or a region stays in its geography.
VERTEX_ZONES = {"global": "Global", "us": "US", "eu": "EU"}
_GOOGLE_REGION_ZONES = (("us-", "US"), ("europe-", "EU"), ("asia-", "APAC"), ("australia-", "APAC"))


def vertex_endpoint(region: str | None) -> str:
    return _VERTEX_HOSTS.get(region or "") or f"https://{region}-aiplatform.googleapis.com"


def vertex_zone(region: str | None, model: str) -> str | None:
    return VERTEX_ZONES.get(region or "") or zone_by_prefix(region, _GOOGLE_REGION_ZONES)


VERTEX = ProviderKind(
    name="vertex_anthropic",
    title="Claude on Vertex AI",
    telemetry_name="gcp.vertex_ai",
    auth_methods=("google",),
    adapter="multihome.providers.anthropic.adapter",
    requires=("region", "project"),
    default_endpoint=vertex_endpoint,
    data_zone=vertex_zone,
    service_tier=False,  # the translation drops it: the standard tier
)

BEDROCK = ProviderKind(
    name="bedrock_anthropic",
    title="Claude on Amazon Bedrock (InvokeModel)",
    telemetry_name="aws.bedrock",
    auth_methods=("api_key_env", "aws"),
    adapter="multihome.providers.anthropic.bedrock",
    requires=("region",),
    # The same Bedrock Runtime endpoints and inference-profile data zones as the `bedrock` kind.
    default_endpoint=bedrock.KIND.default_endpoint,
    data_zone=bedrock.data_zone,
    service_tier=False,  # the translation drops it: the standard tier
)
