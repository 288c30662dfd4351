"""Azure's OpenAI-shaped APIs, with an api-key or an Entra ID token: Azure OpenAI (`azure` kind,
OpenAI bodies on deployment URLs) and the Azure AI model inference API of Microsoft Foundry's model
catalogue (`azure_inference` kind: Llama, Mistral, DeepSeek... on `/models/chat/completions`).

`adapter.py` builds Azure OpenAI's URLs and passes bodies through; `inference.py` does the same for
the model inference API; `providers/entra.py` keeps Entra ID tokens fresh.
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
INFERENCE = ProviderKind(
    name="azure_inference",
    title="Azure AI model inference (Foundry Models)",
    telemetry_name="azure.ai.inference",
    auth_methods=("api_key_env", "entra"),
    adapter="multihome.providers.azure.inference",
)
