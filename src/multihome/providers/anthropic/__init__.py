"""Anthropic's Messages API as an upstream for OpenAI chat calls.

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
