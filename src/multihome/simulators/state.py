"""What a simulator remembers: counters, a bounded request log and the fault table.

Only touched from the simulator's event loop; the methods are small so that in-process tests
may also call them directly (a dict/list update is atomic enough under the GIL)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .faults import Fault, FaultTable, fault_from_mapping


class Stats:
    __slots__ = ("requests", "completed", "errors", "cancelled", "cut", "open_streams")

    def __init__(self) -> None:
        self.open_streams = 0  # streams currently being written (a gauge: reset keeps it)
        self.reset()

    def reset(self) -> None:
        self.requests = 0  # provider API requests received (not /_sim/*)
        self.completed = 0  # successful (2xx) replies fully written, streams included
        self.errors = 0  # replies with a 4xx/5xx status
        self.cancelled = 0  # client closed the connection before the reply/stream finished
        self.cut = 0  # connections the simulator dropped on purpose (cut_after)

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


_BODY_SHOWN = 64 * 1024  # bytes of a request body /_sim/requests shows


class LogEntry:
    """One received provider request. Never holds a credential: only whether one was sent."""

    __slots__ = (
        "time",
        "method",
        "path",
        "api_version",
        "model",
        "stream",
        "auth",
        "request_id",
        "fault",
        "outcome",
        "body",
    )

    def __init__(
        self, time: float, method: str, path: str, api_version: str | None, auth: bool, request_id: str | None
    ):
        self.time = time
        self.method = method
        self.path = path
        self.api_version = api_version
        self.model: str | None = None
        self.stream = False
        self.auth = auth
        self.request_id = request_id
        self.fault: str | None = None
        self.outcome = "pending"  # ok | error:<status> | cut | cancelled
        # What the client sent (a reference, decoded only when /_sim/requests is read): tests check which
        # conversation a provider was given. Credentials travel in headers, never here.
        self.body: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__}
        out["body"] = self.body[:_BODY_SHOWN].decode("utf-8", "replace")
        return out


class SimState:
    def __init__(self, log_size: int = 1000) -> None:
        self.stats = Stats()
        self.log: deque[LogEntry] = deque(maxlen=log_size)
        self.faults = FaultTable()
        self.on_reset: list[Callable[[], None]] = []  # what a kind also forgets on reset (its caches)

    def set_fault(self, fault: Fault | Mapping[str, Any]) -> Fault:
        """Add a run-time fault rule (same keys as the header, plus ``times`` and ``match``)."""
        if not isinstance(fault, Fault):
            fault = fault_from_mapping(fault)
        self.faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        self.stats.reset()
        self.log.clear()
        self.faults.clear()
        for forget in self.on_reset:
            forget()

    def requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        entries = list(self.log)
        if limit is not None:
            entries = entries[-limit:] if limit > 0 else []
        return [e.to_dict() for e in entries]
