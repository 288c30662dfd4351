"""The per-run directory of prometheus_client's multiprocess mode, for `serve --workers N`.

Each worker writes its counters and histograms to memory-mapped files in the directory named by
PROMETHEUS_MULTIPROC_DIR; the worker that answers `/metrics` sums them. The variable must be set
before the workers import prometheus_client, so `serve` sets it (`per_run`) before it starts them,
and the directory must start empty on each run (stale files from a previous run would be summed):
`serve` makes a fresh temporary directory and removes it when the server stops. An operator who sets
the variable chooses the directory; `serve` then empties it of metric files at start-up and leaves it.
Only prometheus_client's own files are deleted: another `*.db` there (the gateway's SQLite database in a
directory it shares) is refused at start, untouched, since the scrape would read every `*.db` as metrics.
No prometheus_client import here: this runs in the parent process before any worker exists.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client's file names: `<type>_<pid>.db`, a gauge's type with its multiprocess mode (values.py).
_METRIC_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


@contextlib.contextmanager
def per_run() -> Iterator[str]:
    """Sets PROMETHEUS_MULTIPROC_DIR for the workers about to start; yields the directory."""
    chosen = os.environ.get(MULTIPROC_ENV)
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        files = list(path.glob("*.db"))
        others = sorted(f.name for f in files if not _METRIC_FILE.fullmatch(f.name))
        if others:
            raise SystemExit(
                f"{MULTIPROC_ENV}={chosen} holds files that are not metrics ({', '.join(others[:5])}): a scrape reads "
                "every *.db file there as metrics, and each start deletes those of an earlier run. Use a directory "
                "only this server's metrics use (docs/metrics.md)."
            )
        for stale in files:
            stale.unlink(missing_ok=True)
        yield str(path)
        return
    made = tempfile.mkdtemp(prefix="multihome-metrics-")
    os.environ[MULTIPROC_ENV] = made
    try:
        yield made
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(made, ignore_errors=True)
