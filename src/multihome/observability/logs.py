"""What `multihome serve` writes to stderr, as the logging config uvicorn applies in every process
(workers included): the `multihome.*` loggers at `--log-level` with a timestamp, and uvicorn's own
start-up and shutdown chatter only at debug, so that info shows one start-up line
(`multihome listening on ...`) and the access log (api/access_log.py), one line per call.
uvicorn's own access log stays off (`access_log=False`): it would repeat each call without
saying who made it or what served it.

`server.log_format: json` writes every line (ours and uvicorn's) as one JSON object (json_log.py).

SQLAlchemy's warnings and errors are written the same way (before, they reached Python's last-resort
handler, bare). One of them is made a one-line warning (`PoolResets`): a connection the pool could not
reset as it came back (its server gone, its rollback cut) is discarded and replaced, which the pool
logged as an ERROR with a traceback, noise in the log of an orderly stop or a database outage.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from .json_log import JsonFormatter

LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # what uvicorn's --log-level takes
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


def serve_log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """The dictConfig for `uvicorn.run(log_config=...)`; `level` is one of LEVELS, `log_format` of FORMATS."""
    ours = "DEBUG" if level == "trace" else level.upper()
    theirs = level.upper() if level in ("debug", "trace") else max(level.upper(), "WARNING", key=_rank)
    from uvicorn.config import LOGGING_CONFIG  # here: the access log imports this module, uvicorn need not load

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["multihome"] = {"()": f"{TextFormatter.__module__}.TextFormatter", "fmt": _FORMAT}
    config["handlers"]["multihome"] = {
        "formatter": "multihome",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["multihome"] = {"handlers": ["multihome"], "level": ours, "propagate": False}
    config.setdefault("filters", {})["pool_resets"] = {"()": f"{PoolResets.__module__}.PoolResets"}
    config["handlers"]["sqlalchemy"] = {**config["handlers"]["multihome"], "filters": ["pool_resets"]}
    config["loggers"]["sqlalchemy"] = {"handlers": ["sqlalchemy"], "level": "WARNING", "propagate": False}
    config["loggers"]["uvicorn.error"] = {"level": theirs}
    config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    if log_format == "json":
        for name in ("multihome", "default", "access"):  # ours and uvicorn's own lines alike
            config["formatters"][name] = {"()": f"{JsonFormatter.__module__}.JsonFormatter"}
    return config


class TextFormatter(logging.Formatter):
    """logging.Formatter with the default timestamp's seconds formatted once per second: the access log
    writes a line per call, and `localtime` + `strftime` for each was a fifth of the line's cost.
    With serve's own format (`serve_format`), `line` writes what `format` would for a record without an
    exception or stack, from its fields alone: the access log makes no record for it (api/access_log.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._second = -1
        self._stamp = ""
        self.serve_format = self._fmt == _FORMAT and type(self._style) is logging.PercentStyle and not self.datefmt

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        return self._time(record.created, record.msecs)

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime(self.default_time_format, self.converter(second))
        msec = self.default_msec_format
        return msec % (self._stamp, msecs) if msec else self._stamp

    def line(self, created: float, levelname: str, name: str, message: str) -> str:
        """`format(record)` for a record of these fields, no exception or stack; only if `serve_format`."""
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime(self.default_time_format, self.converter(second))
        msecs = int((created - second) * 1000) + 0.0  # as LogRecord computes them
        msec = self.default_msec_format
        stamp = msec % (self._stamp, msecs) if msec else self._stamp
        return f"{stamp} {levelname} {name}: {message}"


class PoolResets(logging.Filter):
    """SQLAlchemy's "Exception during reset or similar" (pool/base.py `_finalize_fairy`) as one warning line:
    the pool has already dropped the connection and opens another when one is needed; the exception's
    type and message say why, a traceback through the pool's internals does not."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "Exception during reset or similar" or not record.exc_info:
            return True
        exc = record.exc_info[1]
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        record.msg = "a database connection could not be reset as it went back to the pool (%s); it was discarded"
        record.args = (why,)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


def _rank(name: str) -> int:
    return logging.getLevelName(name) if name != "TRACE" else 5
