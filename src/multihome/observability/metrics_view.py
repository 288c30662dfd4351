"""One tenant's part of the metrics exposition: what a tenant's auditor may scrape (`metrics.access: key`).

The exposition names every tenant: its tokens, cost, budget and rate-limit headroom. An auditor's role is a
tenant's (an auditor key belongs to one tenant), so its scrape holds only the samples
labelled with its own tenant. Series without a tenant label (requests, latency, attempts, breakers, queues)
count every tenant's calls together, so they are left out too: subtracting its own from them would tell a
tenant what the others do. An org-admin's scrape is not narrowed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

# The label value of anything the config and the store do not name (observability/metrics.py): a tenant
# labelled so is not one tenant.
OTHER = "other"


class TenantView:
    """A collector (what prometheus_client's encoders read) yielding `source`'s families with only `tenant`'s
    samples; a family with none of them is left out."""

    def __init__(self, source: Any, tenant: str) -> None:
        self.source = source  # a CollectorRegistry
        self.tenant = tenant

    def collect(self) -> Iterator[Any]:
        if self.tenant == OTHER:
            return
        for family in self.source.collect():
            samples = [s for s in family.samples if s.labels.get("tenant") == self.tenant]
            if samples:
                mine = copy.copy(family)  # the family's name, type and help as they are; only its samples narrowed
                mine.samples = samples
                yield mine
