"""The JSON log format (`server.log_format: json`): one JSON object per line (docs/metrics.md).

`time` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message` (the text line's message), plus
the line's values by name when its logger registered them (`register_fields`: the access log's
request_id, principal, tenant...) and `exception` for a traceback. The fields are the text line's
arguments, nothing more: what the text format never writes (content, keys, tokens), this format does
not either. Apart from logs.py (the gateway's processes), the telemetry worker uses it, so this
module imports no web server.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

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
