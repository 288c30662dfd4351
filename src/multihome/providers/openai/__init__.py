"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp server): bytes pass through.

`adapter.py` is the whole translation (only `model` is replaced); the pass-through behaviour it
shares with Azure lives in `providers/passthrough.py`.
"""

from __future__ import annotations

from ..kind import ProviderKind

KIND = ProviderKind(
    name="openai",
    title="OpenAI",
    telemetry_name="openai",
    auth_methods=("api_key_env",),
    adapter="multihome.providers.openai.adapter",
)
