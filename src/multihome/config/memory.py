"""The `memory:` config section: where agent memory's embeddings come from (docs/memory.md "Embeddings").

By default the offline model that ships inside the `wordllama` wheel embeds every record and query in
the gateway process. `embeddings.model` names a model group instead: memory is then embedded through
the gateway's own routing, as the tenant's calls (policy, entitlements, the tenant's `memory_embedding`
pins, failover, metering, audit).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import msgspec

from .struct import Positive, PositiveCount, Strict

Dimensions = Annotated[int, msgspec.Meta(ge=16, le=8192)]
Batch = Annotated[int, msgspec.Meta(ge=1, le=2048)]


class MemoryEmbeddingsConfig(Strict):
    model: str | None = None  # a model group with the `embeddings` capability; None: the offline model
    dimensions: Dimensions | None = None  # asked of the upstream (`dimensions`); None: the model's own size
    # The model's leading dimensions are an embedding too (Matryoshka: OpenAI text-embedding-3, Gemini
    # gemini-embedding-001): past 10,000 records a search ranks candidates by them first. Leave it off for
    # a model that is not (it is still correct, only slower on large namespaces).
    matryoshka: bool = False
    # Texts per upstream request at most: 96 suits every cloud that takes lists (Cohere on Bedrock takes 96,
    # OpenAI and Azure 2,048); Amazon Titan takes one text per call, so a Titan group needs 1.
    max_batch: Batch = 96


class TenantMemory(Strict):
    """A tenant's memory records at most: how many, and their plaintext bytes (text, metadata, vector; None:
    no limit). Records with the offline model cost no upstream call, so no budget holds them; this does.
    And its namespaces at most: a namespace stays when its records go (its TTL is kept), so writing a record
    to a new one and deleting it grew the table by a row each time, whatever the record limits."""

    max_records: PositiveCount | None = 1_000_000
    max_bytes: PositiveCount | None = 10 << 30
    max_namespaces: PositiveCount | None = 100_000


class MemoryConfig(Strict):
    embeddings: MemoryEmbeddingsConfig = msgspec.field(default_factory=MemoryEmbeddingsConfig)
    per_tenant: TenantMemory = msgspec.field(default_factory=TenantMemory)  # docs/memory.md "A tenant's memory"
    tenants: dict[str, TenantMemory] = msgspec.field(default_factory=dict)  # tenant id -> its own
    per_tenant_refresh_s: Positive = 30.0  # how old a replica's reading of a tenant's totals may be
    # Threads for searches, index loads and long embeddings (docs/memory.md "A tenant's memory"), and how many
    # of them one tenant's work may hold at once: its further work waits, the rest are the other tenants'.
    threads: PositiveCount = 4
    threads_per_tenant: PositiveCount = 2
    # Calls of one tenant on the /v1/memory routes running at once on one replica (None: no bound); 32 times as
    # many more wait their turn, past that a 429: they hold the store's connections, which every tenant shares.
    max_concurrent_per_tenant: PositiveCount | None = 8

    def tenant_limits(self, tenant: str) -> tuple[int | None, int | None]:
        limits = self.tenants.get(tenant, self.per_tenant)
        return limits.max_records, limits.max_bytes

    def tenant_namespaces(self, tenant: str) -> int | None:
        return self.tenants.get(tenant, self.per_tenant).max_namespaces


def check(memory: MemoryConfig, groups: dict[str, list[str]], caps: dict[str, list[str]]) -> Iterator[str]:
    """`groups`: each model group's deployments; `caps`: each deployment's capabilities."""
    emb = memory.embeddings
    if emb.model is None:
        if emb.dimensions is not None or emb.matryoshka or emb.max_batch != 96:
            yield (
                "memory.embeddings: dimensions, matryoshka and max_batch are for a routed model; "
                "set memory.embeddings.model"
            )
        return
    members = groups.get(emb.model)
    if members is None:
        yield f"memory.embeddings.model: unknown model group '{emb.model}' (known: {', '.join(sorted(groups)) or 'none'})"
        return
    lacking = [d for d in members if "embeddings" not in caps.get(d, [])]
    if lacking:
        yield (
            f"memory.embeddings.model: model group '{emb.model}' has deployments without the embeddings "
            f"capability ({', '.join(lacking)}); memory needs a group of embedding deployments"
        )
