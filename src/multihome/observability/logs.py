"""What `multihome serve` writes to stderr, as the logging config uvicorn applies in every process
(workers included): the `multihome.*` loggers at `--log-level` with a timestamp, and uvicorn's own
start-up and shutdown chatter only at debug, so that info shows one start-up line
(`multihome listening on ...`) and the access log (api/access_log.py), one line per call.
uvicorn's own access log stays off (`access_log=False`): it would repeat each call without
saying who made it or what served it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # what uvicorn's --log-level takes
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve_log_config(level: str) -> dict[str, Any]:
    """The dictConfig for `uvicorn.run(log_config=...)`; `level` is one of LEVELS."""
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
    return config


def _rank(name: str) -> int:
    return logging.getLevelName(name) if name != "TRACE" else 5
