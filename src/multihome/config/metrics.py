"""The `metrics:` config section: the Prometheus `GET /metrics` endpoint (docs/metrics.md).

Off unless `enabled`: no route, no per-call work. Who may read it is a choice the operator makes
here, because the exposition names tenants, deployments and spend:

- `loopback` (default): any caller connecting from 127.0.0.1 or ::1, no key (a scraper or sidecar
  on the same host; behind a reverse proxy on the same host every caller is loopback, so use `key`);
- `key`: a key or token with the org-admin or auditor role (`Authorization: Bearer ...`);
- `open`: anyone who can reach the port (a private network where the scraper cannot hold a key).
"""

from __future__ import annotations

from typing import Literal

from .struct import Positive, Strict


class MetricsConfig(Strict):
    enabled: bool = False
    access: Literal["loopback", "key", "open"] = "loopback"
    # With `serve --workers N`: how often each worker publishes what is read rather than counted
    # (queue depths, breaker states, headroom) for the worker that answers the scrape.
    publish_interval_s: Positive = 5.0
    # Budget and rate-limit headroom gauges (one counter read per scrape; Redis when shared).
    headroom: bool = True
