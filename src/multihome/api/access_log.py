"""The access log: one line per call on the `multihome.access` logger, at info level.

    POST /v1/chat/completions 200 12.3ms request_id=req_... principal=key_... tenant=ten_...
    model_group=gpt-4o deployment=az-eastus   (one line)

Who called is the principal's subject (an API key's id `key_...`, `env:VAR` for a key from the
config, or a token's `sub`), never a secret; no request or answer content is written. It costs
one `isEnabledFor` check when the level is above info, and one logger call (formatted only by a
handler that writes it) when it is on. Health probes are not logged (api/routes.py, `quiet`).
A client that left before its answer began is logged with status 499, as the call record has it.
"""

from __future__ import annotations

import logging
import time

from ..observability.json_log import register_fields
from .pipeline import Call

log = logging.getLogger("multihome.access")
_INFO = logging.INFO
_LINE = "%s %s %d %.1fms request_id=%s principal=%s tenant=%s model_group=%s deployment=%s"
# The JSON log format's field names for _LINE's arguments (observability/logs.py).
register_fields(
    log.name,
    ("method", "path", "status", "duration_ms", "request_id", "principal", "tenant", "model_group", "deployment"),
)


def write(call: Call) -> None:
    """The call's line, if the access log is on and its route is not a quiet one."""
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
    # What log.info does, without its walk up the stack for the caller's file and line (the same
    # for every line here, and a third of the cost of a line).
    log.handle(log.makeRecord(log.name, _INFO, __file__, 0, _LINE, args, None))


def _printable(text: str) -> str:
    """Text a client chose (a path, a token's subject), kept on one line: anything unprintable is escaped."""
    return text if text.isprintable() and " " not in text else ascii(text)
