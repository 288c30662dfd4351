"""Long-term agent memory: records per tenant and namespace (agent, user), sealed under the tenant's
`memory` key, found by hybrid search (embeddings and BM25). docs/memory.md. `MemoryStore` is the one way in."""

from __future__ import annotations

from ...schema.memory import MODES
from .embedder import Embedder, EmbedderUnavailable, WordLlamaEmbedder
from .filters import compile_filter
from .store import Hit, MemoryRecord, MemoryStore, Namespace, NewRecord

__all__ = [
    "MODES",
    "Embedder",
    "EmbedderUnavailable",
    "Hit",
    "MemoryRecord",
    "MemoryStore",
    "Namespace",
    "NewRecord",
    "WordLlamaEmbedder",
    "compile_filter",
]
