"""A gateway starting on a database at head loads neither alembic (storage/migrate.py reads the revision
with plain SQL) nor numpy and the memory index's libraries (state/memory/numeric.py: on first memory use),
nor httpx/httpcore (tools/dial.py: on the first MCP call) nor jinja2 (the console's first page):
together ~1.5 s of imports on a busy machine, paid by every process the test suite starts."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("alembic", "mako", "pygments", "numpy", "bm25s", "wordllama", "threadpoolctl", "httpx2", "httpcore2", "jinja2")

CODE = """
import asyncio, sys
import multihome.app, multihome.cli.main
from multihome.storage import open_store

async def main():
    store = await open_store(sys.argv[1], migrate=True)
    try:
        await store.ensure_current()
    finally:
        await store.close()

asyncio.run(main())
print(" ".join(m for m in sys.argv[2:] if m in sys.modules))
"""


def test_serve_path_at_head_imports_no_alembic_or_numpy(db_url):
    out = subprocess.run(
        [sys.executable, "-c", CODE, db_url, *HEAVY], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == [], out.stdout
    # The same check fails where it should: an empty database is migrated, which needs alembic.
    empty = db_url.rsplit("/", 1)[0] + "/empty.db" if db_url.startswith("sqlite") else None
    if empty is not None:
        out = subprocess.run(
            [sys.executable, "-c", CODE, empty, "alembic"], capture_output=True, text=True, timeout=120, check=True
        )
        assert out.stdout.split() == ["alembic"]


FIRST_USE = """
import sys
from threadpoolctl import threadpool_info
import multihome.app
assert "numpy" not in sys.modules
if sys.argv[1] == "embedder":
    from multihome.state.memory import WordLlamaEmbedder
    WordLlamaEmbedder().embed(["the first memory use"])
else:
    from multihome.state.memory.index import NamespaceIndex
    NamespaceIndex(8)
blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
print(" ".join(str(p["num_threads"]) for p in blas) or "none")
"""


def test_the_first_memory_use_loads_numpy_with_blas_on_one_thread():
    """Whichever memory module loads numpy first (the offline model or the index), BLAS is on one thread."""
    for first in ("embedder", "index"):
        out = subprocess.run([sys.executable, "-c", FIRST_USE, first], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert set(out.stdout.split()) <= {"1", "none"}, (first, out.stdout)
