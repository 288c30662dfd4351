"""Database access: SQLite (embedded default) or PostgreSQL, versioned migrations, hot-path snapshots."""

from .errors import Conflict, Invalid, NotFound, SchemaOutOfDate, StorageError
from .keys import KeyIndex, hash_key, parse_prefix
from .migrate import head_revision, migrate_sync
from .records import AdminEvent, Budget, Entitlement, KeyRecord, Policy, StatefulPin, Team, Tenant, TokenRevocation
from .revocations import RevocationIndex
from .snapshot import Snapshot, SnapshotCache
from .store import Store, open_store

__all__ = [
    "AdminEvent",
    "Budget",
    "Conflict",
    "Entitlement",
    "Invalid",
    "KeyIndex",
    "KeyRecord",
    "NotFound",
    "Policy",
    "RevocationIndex",
    "SchemaOutOfDate",
    "Snapshot",
    "StatefulPin",
    "SnapshotCache",
    "StorageError",
    "Store",
    "Team",
    "Tenant",
    "TokenRevocation",
    "hash_key",
    "head_revision",
    "migrate_sync",
    "open_store",
    "parse_prefix",
]
