"""Azure OpenAI: OpenAI bodies on deployment URLs, with an api-key or an Entra ID token.

`adapter.py` builds the URLs and passes bodies through; `providers/entra.py` keeps Entra ID tokens fresh.
"""

from __future__ import annotations

from ..kind import ProviderKind

KIND = ProviderKind(
    name="azure",
    title="Azure OpenAI",
    telemetry_name="azure.ai.openai",
    auth_methods=("api_key_env", "entra"),
    adapter="multihome.providers.azure.adapter",
)
