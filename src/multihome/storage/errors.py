"""Typed storage errors. The admin API maps them to HTTP (NotFound 404, Conflict 409, Invalid 400,
UnreadableRow 409)."""

from __future__ import annotations

from ..outage_log import first_line
from ..schema.errors import echo


class StorageError(Exception):
    pass


class NotFound(StorageError):
    def __init__(self, kind: str, id: str, tenant_id: str | None = None) -> None:
        where = f" in tenant {echo(tenant_id)}" if tenant_id else ""
        super().__init__(f"{kind} {echo(id)} not found{where}")
        self.kind, self.id, self.tenant_id = kind, id, tenant_id


class Conflict(StorageError):
    """The change contradicts what is stored; `conflicting` names the object in the way (if any)."""

    def __init__(self, message: str, *, conflicting: str | None = None) -> None:
        super().__init__(message)
        self.conflicting = conflicting


class UnreadableRow(StorageError):
    """A stored row the gateway cannot read (storage/rows.py): named by kind and id with what is wrong,
    never its stored values. `mend` says how the admin API can remove or replace it."""

    def __init__(self, kind: str, id: str, problem: str, mend: str) -> None:
        named = "API key" if kind == "api key" else kind
        super().__init__(f"{named} {echo(id)} is stored but cannot be read ({problem}); {mend}")
        self.kind, self.id, self.problem = kind, id, problem


class Refused(StorageError):
    """A unit of work's own refusal of the caller's change, decided inside its transaction (nothing was
    written): the caller's to report, not a failure of the database (never logged as one)."""


class Unavailable(StorageError):
    """The database cannot take the work now (its file cannot be opened or written, the disk is full, the
    writer is closed): nothing was written; the API answers 503 `storage_unavailable`, retry later."""


class Invalid(StorageError, ValueError):
    """A value the store will not accept (empty name, unknown role, ends_on before starts_on...).
    `field` names the offending argument when one is to blame (the admin API's `param`)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SchemaOutOfDate(StorageError):
    def __init__(self, current: str | None, head: str) -> None:
        super().__init__(
            f"database schema is at revision {current or '(empty)'} but this version of Multihome needs {head}; "
            "run `multihome db upgrade`"
        )
        self.current, self.head = current, head


# SQLite's primary result codes for a file that cannot be used now, rather than bad data or a bug: CANTOPEN (the
# file or its directory is gone or unreadable), READONLY, FULL, IOERR, BUSY and LOCKED (a lock held past the
# busy timeout). CORRUPT and NOTADB are not among them: retrying will not help, a 500 says so.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 8, 10, 13, 14})

# SQLSTATEs of a server that takes no writes now, rather than a bug: 25006 read_only_sql_transaction, what a hot
# standby (or `default_transaction_read_only`) answers every write with. After a failover a pooled connection, or a
# DNS name not yet moved, can still reach the old primary turned standby (RDS/Aurora, Azure, Patroni): retrying
# once the name or the pool reaches the new primary helps. Reads still work meanwhile.
_SQLSTATE_UNAVAILABLE = frozenset({"25006"})

# asyncpg's errors for a server that refuses or ends connections (shutting down, starting, restarting).
_CONNECTION_ERRORS = frozenset(
    {"CannotConnectNowError", "AdminShutdownError", "ConnectionDoesNotExistError", "ConnectionFailureError"}
)


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached now (refused, reset, shutting down, timed out, or
    reached but read-only: a standby after a failover, a SQLite file made read-only), rather than a bug or bad data: the admin API and the Responses and Conversations APIs answer it with 503
    `storage_unavailable`, not a 500.
    Only the error itself and what it was raised from (`__cause__`, as SQLAlchemy wraps the driver's)
    count: an error raised while handling another (a KMS refusal after a missing file) is not an outage."""
    seen: BaseException | None = exc
    for _ in range(8):  # the driver's error is wrapped by SQLAlchemy's, sometimes twice
        if seen is None:
            return False
        if isinstance(seen, (ConnectionError, TimeoutError, Unavailable)) or type(seen).__name__ in _CONNECTION_ERRORS:
            return True
        code = getattr(seen, "sqlite_errorcode", None)  # sqlite3.Error (3.11+): the extended result code
        if isinstance(code, int) and code & 0xFF in _SQLITE_UNAVAILABLE:
            return True
        if getattr(seen, "sqlstate", None) in _SQLSTATE_UNAVAILABLE:  # asyncpg's, SQLAlchemy's adapted, psycopg's
            return True
        if getattr(seen, "connection_invalidated", False):  # sqlalchemy.exc.DBAPIError on a dead connection
            return True
        seen = seen.__cause__
    return False


def outage(exc: BaseException) -> str | None:
    """For a background task's log line: the database's own words when `exc` is an outage (`unavailable`),
    else None (then the traceback is worth its lines). A poller meets an outage at every round: one line each,
    not a traceback through the driver and the pool."""
    if not unavailable(exc):
        return None
    return first_line(exc)  # the driver's error says it best (SQLAlchemy's wraps it with a URL to docs)
