"""The `audit:` config section. Absent section = audit off; `dir` alone = a hash-chained trail
without signed checkpoints (verify then warns that a cut tail cannot be detected)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .struct import Strict


class AuditConfig(Strict):
    dir: str | None = None  # where chain files go; None = audit off
    # Ed25519 private key: a PEM file, or an env var holding PEM or the raw 32-byte seed in base64.
    signing_key_file: str | None = None
    signing_key_env: str | None = None
    key_id: str | None = None  # default: derived from the public key ("ed25519:<16 hex>")
    # The name the head registry (in the storage database) files this directory's chains under.
    # Default "<hostname>:<real path of dir>"; set it where the hostname changes at every restart.
    trail: str | None = None
    # Public keys `verify` accepts: key id -> PEM file path (old keys stay here after a rotation).
    public_keys: dict[str, str] = msgspec.field(default_factory=dict)
    checkpoint_every_s: float = 10.0
    checkpoint_every_events: int = 10_000
    max_batch: int = 256  # events per write (one event-loop step); one fsync covers all writes before it
    commit_delay_ms: float = 0.0  # the fsync thread's wait to gather more writes; 0 = natural group commit
    max_queue: int = 65_536  # events waiting for the writer; producers beyond this wait
    # What an answer waits for (docs/audit.md, "The durability promise"): "interval", its `call_started`
    # written to the chain file (held by the OS: a crash or kill of the gateway loses nothing), which
    # is fsynced within `sync_interval_ms`; "answer", that line fsynced (one fsync per answer when idle).
    sync: Literal["interval", "answer"] = "interval"
    sync_interval_ms: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 10.0
    fsync: bool = True  # False only for benchmarks/tests of the CPU path: no durability promise

    @property
    def enabled(self) -> bool:
        return self.dir is not None
