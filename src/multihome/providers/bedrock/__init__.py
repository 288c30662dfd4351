"""AWS Bedrock Runtime: Converse / ConverseStream for chat, InvokeModel for embeddings.

`request.py` turns an OpenAI chat body into a Converse body, `response.py` a Converse answer into
a chat.completion, `stream.py` decodes ConverseStream event-stream frames into chunks,
`embeddings.py` speaks InvokeModel for Titan and Cohere, `auth.py` signs (SigV4 or a Bedrock API
key); `adapter.py` holds the URLs and error classification.
"""

from __future__ import annotations

from ..kind import ProviderKind


def _public_endpoint(region: str | None) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


KIND = ProviderKind(
    name="bedrock",
    title="AWS Bedrock",
    telemetry_name="aws.bedrock",
    auth_methods=("api_key_env", "aws"),
    adapter="multihome.providers.bedrock.adapter",
    requires=("region",),
    default_endpoint=_public_endpoint,
)
