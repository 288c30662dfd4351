"""The head registry's upsert is one statement per dialect that SQLAlchemy can cache: built and compiled
once, not at every publish (an INSERT with a list of VALUES has no cache key: ~1.5 ms of the event loop
per publish on PostgreSQL)."""

from __future__ import annotations

import pytest

from multihome.audit.checkpoint import new_checkpoint
from multihome.audit.heads import upsert


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_upsert_is_one_cacheable_statement_whatever_the_checkpoints(dialect):
    one, rows1 = upsert(dialect, "host:/a", "host", [new_checkpoint(None, None, "chn_x", 1, "h1", 1.0)])
    three, rows3 = upsert(
        dialect, "host:/a", "host", [new_checkpoint(None, None, f"chn_{c}", 2, "h2", 2.0) for c in "xyz"]
    )
    assert one is three
    assert one._generate_cache_key() is not None  # None: compiled anew at every execution
    assert [r["chain"] for r in rows3] == ["chn_x", "chn_y", "chn_z"] and rows1[0]["seq"] == 1
    assert set(rows1[0]) == {"chain", "trail", "host", "seq", "head", "final", "checkpoint", "updated_at"}
