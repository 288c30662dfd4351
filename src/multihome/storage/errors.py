"""Typed storage errors. The admin API maps them to HTTP (NotFound 404, Conflict 409, Invalid 400)."""

from __future__ import annotations


class StorageError(Exception):
    pass


class NotFound(StorageError):
    def __init__(self, kind: str, id: str, tenant_id: str | None = None) -> None:
        where = f" in tenant {tenant_id}" if tenant_id else ""
        super().__init__(f"{kind} {id} not found{where}")
        self.kind, self.id, self.tenant_id = kind, id, tenant_id


class Conflict(StorageError):
    """The change contradicts what is stored; `conflicting` names the object in the way (if any)."""

    def __init__(self, message: str, *, conflicting: str | None = None) -> None:
        super().__init__(message)
        self.conflicting = conflicting


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
