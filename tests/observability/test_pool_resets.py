"""A pooled connection the pool could not reset is one warning line in the gateway's log, not an ERROR
with a traceback through SQLAlchemy's internals (observability/logs.py `PoolResets`)."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.config
import sys

from multihome.observability.logs import serve_log_config

POOL = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"  # the logger SQLAlchemy's async pool writes to


def _logged(emit, monkeypatch) -> str:
    """What the gateway's stderr gets (its handlers', or Python's last-resort handler's) from `emit(pool logger)`."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    logger = logging.getLogger("sqlalchemy")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        logging.config.dictConfig(serve_log_config("info"))
        emit(logging.getLogger(POOL))
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
        for name in ("multihome", "uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers.clear()
    return out.getvalue()


def test_an_interrupted_reset_is_one_warning_line(monkeypatch):
    def emit(pool: logging.Logger) -> None:
        try:
            raise asyncio.CancelledError
        except asyncio.CancelledError:
            pool.error("Exception during reset or similar", exc_info=True)
        try:
            raise ConnectionResetError("the server closed the connection")
        except ConnectionResetError:
            pool.error("Exception during reset or similar", exc_info=True)

    lines = _logged(emit, monkeypatch).splitlines()
    assert len(lines) == 2 and "Traceback" not in "\n".join(lines), lines
    assert " WARNING sqlalchemy.pool.impl.AsyncAdaptedQueuePool: " in lines[0]
    assert lines[0].endswith("could not be reset as it went back to the pool (CancelledError); it was discarded")
    assert "(ConnectionResetError: the server closed the connection)" in lines[1]


def test_sqlalchemys_other_warnings_keep_their_words_and_format(monkeypatch):
    text = _logged(lambda pool: pool.warning("something %s", "else"), monkeypatch)
    assert text.rstrip().endswith(" WARNING sqlalchemy.pool.impl.AsyncAdaptedQueuePool: something else"), text
