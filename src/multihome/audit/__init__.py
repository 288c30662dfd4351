"""Tamper-evident audit trail: hash-chained events per writer process, signed checkpoints,
a batched group-commit writer, verification, and filtered reads. See docs/audit.md."""

from .events import KINDS, AdminChange, AgentStep, CallEvent, CallStarted, PolicyDenial
from .reader import AuditReader, Filters
from .verify import Report, verify_dir
from .writer import AuditClosed, AuditLog, AuditUnwritable

__all__ = [
    "KINDS",
    "AdminChange",
    "AgentStep",
    "AuditClosed",
    "AuditLog",
    "AuditReader",
    "AuditUnwritable",
    "CallEvent",
    "CallStarted",
    "Filters",
    "PolicyDenial",
    "Report",
    "verify_dir",
]
