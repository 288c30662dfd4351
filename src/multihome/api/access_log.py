"""The access log: one line per call on the `multihome.access` logger, at info level.

    POST /v1/chat/completions 200 12.3ms request_id=req_... principal=key_... tenant=ten_...
    model_group=gpt-4o deployment=az-eastus   (one line)

Who called is the principal's subject (an API key's id `key_...`, `env:VAR` for a key from the
config, or a token's `sub`), never a secret; no request or answer content is written. It costs
one `isEnabledFor` check when the level is above info. When it is on, the lines of one event-loop
tick are written together at the end of the tick: one write (and one flush) per stream handler
for all of them, in the order the calls ended, instead of one write system call per line (which
cost ~13 % of the plain gateway's throughput at concurrency 64, and more with writer threads
running, since every system call gives the GIL away). A line is therefore written at most one
loop tick after its call ended; lines still pending at exit are written then. Health probes are
not logged (api/routes.py, `quiet`). A client that left before its answer began is logged with
status 499, as the call record has it. For the handler `multihome serve` sets up (a stream handler with
its text format, no filters) a line is written from its time and arguments alone, as that formatter
would write its record (observability/logs.py `TextFormatter.line`): a LogRecord and the Formatter's
steps were most of a line's cost. Any other handler, a filter or a record factory gets records as
`log.info` would make them: a copy of one made by `makeRecord` on this thread in this process, with
only its time and arguments its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
from typing import Any

from ..observability.json_log import register_fields
from ..observability.logs import TextFormatter
from .pipeline import Call

log = logging.getLogger("multihome.access")
_INFO = logging.INFO
_LINE = "%s %s %d %.1fms request_id=%s principal=%s tenant=%s model_group=%s deployment=%s"
# The JSON log format's field names for _LINE's arguments (observability/logs.py).
register_fields(
    log.name,
    ("method", "path", "status", "duration_ms", "request_id", "principal", "tenant", "model_group", "deployment"),
)


def write(call: Call, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """The call's line, if the access log is on and its route is not a quiet one. `loop`: the running
    loop, if the caller knows it (asking for it is a getpid() system call)."""
    if not log.isEnabledFor(_INFO) or (call.route is not None and call.route.quiet):
        return
    principal, served, scope = call.principal, call.served, call.scope
    path = scope["raw_path"] or scope["path"].encode()
    args = (
        scope["method"],
        _printable(path.decode("latin-1")),
        call.status or 499,
        (time.perf_counter() - call.t0) * 1000,
        call.request_id.decode(),
        _printable(principal.subject) if principal is not None else "-",
        _printable(principal.tenant) if principal is not None else "-",
        call.group or "-",
        served.deployment.name if served is not None else "-",
    )
    entry = (time.time(), args)
    if not _pending:
        try:
            (loop or asyncio.get_running_loop()).call_soon(flush)
        except RuntimeError:  # no loop (a test, a tool): write it now
            _pending.append(entry)
            flush()
            return
    _pending.append(entry)


# The lines of this tick: (time, arguments), made into records only for a handler or filter that needs one.
_pending: list[tuple[float, tuple[Any, ...]]] = []
# Per thread id, what every line's record made there holds but its time and arguments (reset in a forked child).
_templates: dict[int, dict[str, Any]] = {}
os.register_at_fork(after_in_child=_templates.clear)


def _message(args: tuple[Any, ...]) -> str:
    """`_LINE % args`, formatted without parsing _LINE for each line (tests check it is the same text)."""
    method, path, status, ms, rid, principal, tenant, group, deployment = args
    return (
        f"{method} {path} {status:d} {ms:.1f}ms request_id={rid} principal={principal} tenant={tenant} "
        f"model_group={group} deployment={deployment}"
    )


def _msecs(created: float) -> float:
    return int((created - int(created)) * 1000) + 0.0  # as LogRecord computes them


def _record(args: tuple[Any, ...], now: float | None = None) -> logging.LogRecord:
    """What log.info would make for the line, without its walk up the stack for the caller's file and line,
    and, unless a record factory is set, without looking up the thread, the process and the file again."""
    if logging.getLogRecordFactory() is not logging.LogRecord:
        return log.makeRecord(log.name, _INFO, __file__, 0, _LINE, args, None)
    template = _templates.get(threading.get_ident())
    if template is None:
        template = vars(log.makeRecord(log.name, _INFO, __file__, 0, _LINE, (), None)).copy()
        _templates[threading.get_ident()] = template
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = vars(record)
    fields.update(template)
    if now is None:
        now = time.time()
    fields["created"], fields["args"] = now, args
    fields["msecs"] = _msecs(now)
    fields["relativeCreated"] = (now - _START) * 1000
    return record


_START: float = logging._startTime  # type: ignore[attr-defined]  # what relativeCreated counts from


def flush() -> None:
    """Write the pending lines: what Logger.handle would do for each, with one write per stream. A
    stream handler with serve's text format and no filters gets its text without a record per line."""
    if not _pending:
        return
    entries = _pending[:]
    _pending.clear()
    if log.disabled:
        return
    direct = not log.filters and logging.getLogRecordFactory() is logging.LogRecord
    made: list[logging.LogRecord] | None = None

    def records() -> list[logging.LogRecord]:
        nonlocal made
        if made is None:
            made = [r for r in (_record(args, now) for now, args in entries) if log.filter(r)]
        return made

    found = False
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            found = True
            formatter = _serve_formatter(handler) if direct else None
            if formatter is not None:
                _emit_lines(handler, formatter, entries)
            else:
                _emit(handler, records())
        if not logger.propagate:
            break
        logger = logger.parent
    if not found and logging.lastResort is not None:
        _emit(logging.lastResort, records())


def _serve_formatter(handler: logging.Handler) -> TextFormatter | None:
    """The handler's formatter when `_emit_lines` writes exactly what the handler would: a plain stream
    handler, no filters, serve's text format."""
    formatter = handler.formatter
    if type(formatter) is TextFormatter and formatter.serve_format and not handler.filters:
        if type(handler) is logging.StreamHandler:
            return formatter
    return None


def _emit_lines(
    handler: logging.Handler, formatter: TextFormatter, entries: list[tuple[float, tuple[Any, ...]]]
) -> None:
    if _INFO < handler.level:
        return
    assert isinstance(handler, logging.StreamHandler)
    line, name, end = formatter.line, log.name, handler.terminator
    try:
        text = "".join([line(now, "INFO", name, _message(args)) + end for now, args in entries])
        with handler.lock or contextlib.nullcontext():
            handler.stream.write(text)
            handler.flush()
    except Exception:
        handler.handleError(_record(entries[0][1], entries[0][0]))


def _emit(handler: logging.Handler, records: list[logging.LogRecord]) -> None:
    mine = [r for r in records if r.levelno >= handler.level and handler.filter(r)]
    if not mine:
        return
    if not isinstance(handler, logging.StreamHandler):
        for record in mine:
            handler.handle(record)
        return
    try:
        text = "".join([handler.format(r) + handler.terminator for r in mine])
        with handler.lock or contextlib.nullcontext():
            handler.stream.write(text)
            handler.flush()
    except Exception:
        handler.handleError(mine[0])


atexit.register(flush)  # lines of the last tick, if the loop stopped before writing them


def _printable(text: str) -> str:
    """Text a client chose (a path, a token's subject), kept on one line: anything unprintable is escaped."""
    return text if text.isprintable() and " " not in text else ascii(text)
