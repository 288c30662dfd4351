"""What `multihome serve` writes to stderr, as the logging config uvicorn applies in every process
(workers included): the `multihome.*` loggers at `--log-level` with a timestamp, and uvicorn's own
start-up and shutdown chatter only at debug, so that info shows one start-up line
(`multihome listening on ...`) and the access log (api/access_log.py), one line per call.
uvicorn's own access log stays off (`access_log=False`): it would repeat each call without
saying who made it or what served it.

`server.log_format: json` writes every line (ours and uvicorn's) as one JSON object: `time` (UTC,
ISO 8601, milliseconds), `level`, `logger`, `message` (the text line's message), plus the line's fields by name
when its logger registered them (`register_fields`: the access log's request_id, principal,
tenant...) and `exception` for a traceback. The fields are the text line's arguments, nothing
more: what the text format never writes (content, keys, tokens), the JSON format does not either.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import msgspec
from uvicorn.config import LOGGING_CONFIG

LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # what uvicorn's --log-level takes
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
_encode = msgspec.json.Encoder(enc_hook=str).encode  # anything else a line's arguments hold: as its text
_FIELDS: dict[str, tuple[str, ...]] = {}  # logger name -> the names of its lines' arguments, in order


def register_fields(logger: str, names: tuple[str, ...]) -> None:
    """Name the arguments of a logger's lines, so the JSON format writes them as fields."""
    _FIELDS[logger] = names


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module's docstring). The timestamp's seconds are
    formatted once per second, and msgspec encodes: a line costs a few microseconds more than text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line: dict[str, Any] = {
            "time": f"{self._stamp}.{int((record.created - second) * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        names = _FIELDS.get(record.name)
        if names is not None and isinstance(record.args, tuple) and len(record.args) == len(names):
            line["fields"] = dict(zip(names, record.args, strict=True))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def serve_log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """The dictConfig for `uvicorn.run(log_config=...)`; `level` is one of LEVELS, `log_format` of FORMATS."""
    ours = "DEBUG" if level == "trace" else level.upper()
    theirs = level.upper() if level in ("debug", "trace") else max(level.upper(), "WARNING", key=_rank)
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["multihome"] = {"format": _FORMAT}
    config["handlers"]["multihome"] = {
        "formatter": "multihome",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["multihome"] = {"handlers": ["multihome"], "level": ours, "propagate": False}
    config["loggers"]["uvicorn.error"] = {"level": theirs}
    config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    if log_format == "json":
        for name in ("multihome", "default", "access"):  # ours and uvicorn's own lines alike
            config["formatters"][name] = {"()": f"{__name__}.JsonFormatter"}
    return config


def _rank(name: str) -> int:
    return logging.getLevelName(name) if name != "TRACE" else 5
