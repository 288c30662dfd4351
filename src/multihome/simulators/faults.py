"""Fault knobs: one parser for the ``x-sim-fault`` header and the ``/_sim/faults`` body, and a
table of run-time rules with ``times`` (self-clearing) and ``match`` (per model/deployment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


class FaultError(ValueError):
    """A fault spec that cannot be understood (reported to the caller as a 400)."""


@dataclass(slots=True)
class Fault:
    status: int | None = None  # reply with this HTTP status and a provider-shaped error body
    latency_ms: int = 0  # sleep before replying / before the first byte of a stream
    throttle: float | None = None  # 429 with Retry-After: <seconds>
    content_filter: str | None = None  # "prompt" (400) or "output" (finish_reason content_filter)
    cut_after: int | None = None  # stream: abort after n content chunks; non-stream: abort at once
    malformed_at: int | None = None  # stream: insert `data: {not json` as the n-th event
    first_byte_ms: int = 0  # extra delay before the response headers
    chunk_delay_ms: int = 0  # delay between stream chunks
    chunks: int | None = None  # force the reply to have exactly n content chunks (words)
    hang: bool = False  # never reply; the client must give up
    error_code: str | None = None  # with `status`: the error body's code (e.g. context_length_exceeded)
    # Run-time rules only:
    times: int | None = None  # apply to the next N matching requests, then clear
    match: str | None = None  # only requests whose model/deployment equals this

    def describe(self) -> str:
        """The header form of the knobs that are set (for the request log)."""
        parts = []
        for f in fields(self):
            if f.name in ("times", "match"):
                continue
            v = getattr(self, f.name)
            if v is None or v is False or (v == 0 and f.name.endswith("_ms")):
                continue
            parts.append(f"{f.name}={int(v) if isinstance(v, bool) else v}")
        return ";".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in asdict(self).items()
            if v is not None and v is not False and not (k.endswith("_ms") and v == 0)
        }


_INT = {"status", "latency_ms", "cut_after", "malformed_at", "first_byte_ms", "chunk_delay_ms", "chunks", "times"}
_MAX_CHUNKS = 1_000_000


def _coerce(key: str, value: Any) -> Any:
    if key in _INT:
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise FaultError(f"{key} must be an integer, got {value!r}") from None
        if n < 0:
            raise FaultError(f"{key} must be >= 0")
        if key == "status" and not 100 <= n <= 599:
            raise FaultError("status must be an HTTP status code (100-599)")
        if key == "chunks" and not 1 <= n <= _MAX_CHUNKS:
            raise FaultError(f"chunks must be between 1 and {_MAX_CHUNKS}")
        if key == "malformed_at" and n < 1:
            raise FaultError("malformed_at is 1-based")
        return n
    if key == "throttle":
        try:
            s = float(value)
        except (TypeError, ValueError):
            raise FaultError(f"throttle must be a number of seconds, got {value!r}") from None
        if s < 0:
            raise FaultError("throttle must be >= 0")
        return s
    if key == "hang":
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("1", "true", "yes", "on")
    if key == "content_filter":
        v = str(value).strip().lower()
        if v not in ("prompt", "output"):
            raise FaultError("content_filter must be 'prompt' or 'output'")
        return v
    if key == "match":
        return None if value is None else str(value)
    if key == "error_code":
        return str(value)
    raise FaultError(f"unknown fault key {key!r}")


_KEYS = {f.name for f in fields(Fault)}


def fault_from_mapping(data: Mapping[str, Any], allow_rule_keys: bool = True) -> Fault:
    if not isinstance(data, Mapping):
        raise FaultError("a fault must be a JSON object")
    kwargs = {}
    for key, value in data.items():
        if key not in _KEYS or (not allow_rule_keys and key in ("times", "match")):
            raise FaultError(f"unknown fault key {key!r}")
        kwargs[key] = _coerce(key, value)
    return Fault(**kwargs)


def parse_fault_header(value: str) -> Fault:
    """Parse ``key=value;key=value`` (blank parts ignored, ``hang`` alone means hang=1)."""
    data: dict[str, str] = {}
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        data[key] = val.strip() if sep else "1"
    return fault_from_mapping(data, allow_rule_keys=False)


class FaultTable:
    """Run-time fault rules. The first rule whose ``match`` fits a request applies to it."""

    __slots__ = ("rules",)

    def __init__(self) -> None:
        self.rules: list[Fault] = []

    def __bool__(self) -> bool:
        return bool(self.rules)

    def add(self, fault: Fault) -> None:
        # One rule per match target: setting a fault for the same target replaces it.
        self.rules = [r for r in self.rules if r.match != fault.match]
        if fault.times != 0:
            self.rules.append(fault)

    def clear(self) -> None:
        self.rules = []

    def take(self, model: str | None) -> Fault | None:
        """The rule for this request, counting one use against ``times``."""
        for i, rule in enumerate(self.rules):
            if rule.match is not None and rule.match != model:
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    del self.rules[i]
            return rule
        return None

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rules]
