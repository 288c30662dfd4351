"""AuditReader: filtered, paginated reads straight from the chain files.

The files are the source of truth, so a query is a scan: chains in name order (names start with
the writer's start time), events in seq order. A cursor is `<chain>:<seq>` of the last event
returned; the next page starts after it. Lines that do not decode and a torn last line are
skipped here; `audit verify` is what reports them. A chain's genesis record (seq 0, the writer's
own bookkeeping, see docs/audit.md) is never returned.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from ..schema.errors import echo
from .chainfile import chain_names


class BadQuery(ValueError):
    pass


@dataclass(frozen=True)
class Filters:
    tenant: str | None = None
    since: float | None = None  # unix seconds, inclusive, on the event's `time`
    until: float | None = None  # exclusive
    kind: str | None = None
    model_group: str | None = None
    deployment: str | None = None
    outcome: str | None = None  # a call's outcome; a policy_denial counts as "denied"
    subject: str | None = None  # principal subject, or an admin change's actor
    key_id: str | None = None
    request_id: str | None = None

    def match(self, e: dict) -> bool:
        body = e.get("body")
        if not isinstance(body, dict):
            return False
        t = e.get("time", 0)
        if self.since is not None and t < self.since:
            return False
        if self.until is not None and t >= self.until:
            return False
        if self.kind is not None and e.get("kind") != self.kind:
            return False
        for name in ("tenant", "model_group", "deployment", "key_id", "request_id"):
            want = getattr(self, name)
            if want is not None and body.get(name) != want:
                return False
        if self.outcome is not None:
            outcome = "denied" if e.get("kind") == "policy_denial" else body.get("outcome")
            if outcome != self.outcome:
                return False
        if self.subject is not None and self.subject not in (body.get("subject"), body.get("actor")):
            return False
        return True


def parse_time(value: str, name: str) -> float:
    """Unix seconds or ISO-8601 (a naive time is UTC)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"{name} must be unix seconds or an ISO-8601 time, not '{echo(value)}'") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def parse_cursor(cursor: str) -> tuple[str, int]:
    chain, _, seq = cursor.rpartition(":")
    if not chain or not (seq.isascii() and seq.isdigit() and len(seq) <= 19):  # isdigit() alone admits '²'
        raise BadQuery(f"cursor '{echo(cursor)}' is not one this server issued (<chain>:<seq>)")
    return chain, int(seq)


class AuditReader:
    def __init__(self, directory: str) -> None:
        self.dir = directory

    def chains(self) -> list[str]:
        return chain_names(self.dir)

    def iter_events(self, filters: Filters, after: str | None = None) -> Iterator[tuple[bytes, dict]]:
        """-> (stored line without its newline, decoded event), in (chain, seq) order."""
        start_chain, start_seq = parse_cursor(after) if after else ("", 0)
        decode = msgspec.json.decode
        for chain in self.chains():
            if chain < start_chain:
                continue
            skip_to = start_seq if chain == start_chain else 0
            try:
                f = open(os.path.join(self.dir, chain + ".jsonl"), "rb")
            except OSError:
                continue  # removed while we listed
            with f:
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break  # torn last line: never acknowledged
                    raw = raw[:-1]
                    try:
                        event = decode(raw)
                    except (msgspec.DecodeError, UnicodeDecodeError):
                        continue
                    if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
                        continue
                    if event["seq"] <= skip_to:  # (seq 0 is the genesis record: never a result)
                        continue
                    if filters.match(event):
                        yield raw, event

    def page(self, filters: Filters, limit: int = 100, after: str | None = None) -> tuple[list[dict], str | None]:
        """-> (up to `limit` events, cursor for the next page or None at the end)."""
        out: list[dict] = []
        for _, event in self.iter_events(filters, after):
            if len(out) == limit:
                last = out[-1]
                return out, f"{last['chain']}:{last['seq']}"
            out.append(event)
        return out, None
