"""The `capture:` config section: per-tenant content capture, off by default (docs/encryption.md
"Content capture"). A tenant listed here has the prompts and answers of its model calls kept,
sealed under its own `capture` data key, readable only by its auditors through the admin API.
"""

from __future__ import annotations

import msgspec

from .struct import Positive, PositiveCount, Strict


class CaptureConfig(Strict):
    tenants: list[str] = msgspec.field(default_factory=list)  # tenant ids with capture on
    max_bytes: PositiveCount = 1024 * 1024  # kept of each prompt and each answer; the rest is cut (and flagged)
    batch_size: PositiveCount = 100  # captures sealed and written per transaction
    flush_interval_s: Positive = 0.5  # how long a capture may wait for its batch
    max_queue: PositiveCount = 10_000  # captures waiting to be written (KMS or database down); beyond: dropped, logged
