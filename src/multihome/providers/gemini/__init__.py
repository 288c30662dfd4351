"""Google's `generateContent` API, reached two ways: the Gemini API (`gemini` kind, an API key)
and Vertex AI (`vertex` kind, OAuth through google-auth). One adapter serves both.

`request.py` turns an OpenAI chat body into a `generateContent` body, `response.py` answers and
embeddings into OpenAI JSON, `stream.py` SSE chunks into chunks (Vertex tokens: `providers/google.py`);
`adapter.py` holds the URLs and error classification.
"""

from __future__ import annotations

from ..kind import ProviderKind

GEMINI_ENDPOINT = "https://generativelanguage.googleapis.com"


def _gemini_endpoint(region: str | None) -> str:
    return GEMINI_ENDPOINT


def vertex_endpoint(region: str | None) -> str:
    return "https://aiplatform.googleapis.com" if region == "global" else f"https://{region}-aiplatform.googleapis.com"


KIND = ProviderKind(
    name="gemini",
    title="Google Gemini API",
    telemetry_name="gcp.gemini",
    auth_methods=("api_key_env",),
    adapter="multihome.providers.gemini.adapter",
    default_endpoint=_gemini_endpoint,
    service_tier=False,  # the translation drops it: the standard tier
)
VERTEX = ProviderKind(
    name="vertex",
    title="Google Vertex AI",
    telemetry_name="gcp.vertex_ai",
    auth_methods=("google",),
    adapter="multihome.providers.gemini.adapter",
    requires=("region", "project"),
    default_endpoint=vertex_endpoint,
    service_tier=False,  # the translation drops it: the standard tier
)
